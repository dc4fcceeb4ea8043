"""Workers behind the coordinator's proxy: a fleet of clients on a few database
connections, one-line errors (its artifact service: test_artifacts.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import tunefleet
from storage.grpc_artifacts import TRANSFERS
from test_bad_input import assert_one_line_error

ROOT = Path(__file__).resolve().parent.parent


def test_a_fleet_of_clients_through_the_proxy_stays_within_its_connections(pg_url, tmp_path):
    """64 simulated workers (the bench's own clients) finish their budget exactly,
    with no error, on the coordinator's 8 connections (and its artifacts' own)."""
    out = tmp_path / "cell.json"
    done = subprocess.run([sys.executable, "-m", "bench.coordinator_scale.run", "--workers", "64", "--existing", "0",
                           "--modes", "tunefleet", "--trials-per-worker", "1", "--trial-seconds", "1",
                           "--processes", "4", "--connections", "8", "--timeout", "150", "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["errors"] == 0, row["error_kinds"]
    assert row["finished"] == row["complete_in_storage"] == 64 and row["running_left"] == 0, row
    assert 1 <= row["peak_connections"] <= 8 + TRANSFERS + 1, row  # the storage's, and the artifacts' own


def test_bad_serve_address_is_one_line(tmp_path, pg_url):
    result = tunefleet("coordinator", "--serve", "nowhere", "--storage", pg_url, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "--serve takes HOST:PORT")
    result = tunefleet("coordinator", "--serve", "127.0.0.1:13999", cwd=tmp_path)  # the embedded journal
    assert result.returncode == 2
    assert_one_line_error(result, "--serve needs a PostgreSQL storage")


def test_a_worker_without_its_coordinator_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = tunefleet("worker", "any", "--storage", f"grpc://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "cannot reach the coordinator")


def test_the_proxys_caches_stay_bounded(monkeypatch):
    """Encodings of finished trials are kept for the studies being read, the least recently
    used going first; a study nobody reads any more lets go of its snapshot."""
    import optuna

    from storage import optuna_compat as compat
    from storage import proxy

    recent = proxy._Recent(3)
    for key in range(5):
        recent[key] = f"trial {key}"
    assert len(recent) == 3 and recent.get(0) is None and recent.get(2) == "trial 2"
    recent[5] = "trial 5"  # 2 was just used: 3 goes
    assert recent.get(3) is None and recent.get(2) == "trial 2"

    storage = optuna.storages.InMemoryStorage()
    ids = [compat.study_id(optuna.create_study(storage=storage, study_name=f"s{i}")) for i in range(2)]
    service = proxy._Service(storage, snapshot_s=0.0)
    service._snapshot(ids[0])
    monkeypatch.setattr(proxy, "SNAPSHOT_KEPT_S", 0.0)
    service._snapshot(ids[1])  # s0 was not read since: its snapshot goes
    assert list(service._snapshots) == [ids[1]]
