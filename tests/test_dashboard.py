"""`tunefleet dashboard` serves the real optuna-dashboard on the same storage."""

from __future__ import annotations

import json
import time
import urllib.request

from conftest import free_port, start_tunefleet, tunefleet


def _get(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_lists_the_study(tiny, tmp_path):
    model, dataset = tiny
    created = tunefleet("study", "create", "watched", "--model", model, "--dataset", dataset,
                        "--method", "qlora", "--n-trials", 2, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    port = free_port()
    server = start_tunefleet("dashboard", "--port", port, cwd=tmp_path)
    try:
        status, body = _get(f"http://127.0.0.1:{port}/api/studies", time.time() + 60)
        assert status == 200
        names = [s["study_name"] for s in json.loads(body)["study_summaries"]]
        assert names == ["watched"]
        status, page = _get(f"http://127.0.0.1:{port}/dashboard", time.time() + 10)
        assert status == 200 and b"<html" in page.lower()
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/" in output, "bound to 127.0.0.1 by default"
