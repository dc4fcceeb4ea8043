"""`tunefleet ray-workers`: workers as actors on a real local Ray cluster of CPU nodes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import psutil
import pytest
from conftest import cli_env, free_port, tunefleet
from test_bad_input import assert_one_line_error

from search import attrs
from storage import open_storage

# The checkout under test, for the launcher, the Ray workers and their worker processes alike,
# whatever checkout an editable install points at.
ROOT = Path(__file__).resolve().parents[1]
ENV = cli_env(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
ENV.pop("RAY_ADDRESS", None)
RAY = str(Path(sys.executable).with_name("ray"))
# One xdist process runs them all: Ray's head takes fixed ports besides the one given here.
pytestmark = pytest.mark.xdist_group("ray")


class RayNode:
    """One node of a local Ray cluster. `ray start` runs in a session of its own, which its
    daemons keep: stopping the node stops them and what they started, no other Ray."""

    def __init__(self, *args: str):
        starter = subprocess.Popen([RAY, "start", *args, "--num-gpus", "0", "--disable-usage-stats"], env=ENV,
                                   start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = starter.communicate(timeout=120)[0]
        self.session = starter.pid
        assert starter.returncode == 0, log

    def stop(self) -> None:
        daemons = [p for p in psutil.process_iter() if _session(p) == self.session]
        processes = daemons + [c for p in daemons for c in _children(p)]  # Ray's workers, and theirs
        for p in processes:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        for p in psutil.wait_procs(processes, timeout=3)[1]:
            p.kill()


def _session(process) -> int | None:
    try:
        return os.getsid(process.pid)
    except OSError:
        return None


def _children(process):
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def head():
    """The head of a one-CPU cluster: its address."""
    temp = tempfile.mkdtemp(prefix="ray-")  # not tmp_path: Ray's socket paths must stay short
    port = free_port()
    node = RayNode("--head", "--port", str(port), "--num-cpus", "1", "--include-dashboard=false",
                   "--ray-client-server-port", str(free_port()), "--temp-dir", temp)
    yield f"127.0.0.1:{port}"
    node.stop()
    shutil.rmtree(temp, ignore_errors=True)


def _create(tiny, tmp_path, name, n_trials, max_steps):
    url = f"journal:{tmp_path / 'journal.log'}"
    model, dataset = tiny
    created = tunefleet("study", "create", name, "--model", model, "--dataset", dataset, "--method", "lora",
                        "--n-trials", n_trials, "--pruner", "none", "--max-steps", max_steps, "--eval-steps", 10, "--seq-len", 48,
                        "--storage", url, cwd=tmp_path, env=ENV)
    assert created.returncode == 0, created.stderr
    return url


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


def test_a_number_of_workers_finish_the_study(tiny, tmp_path, head):
    url = _create(tiny, tmp_path, "fixed", n_trials=6, max_steps=20)
    ran = tunefleet("ray-workers", "fixed", "--address", head, "--num-workers", 2, "--cpus-per-worker", 0.5,
                    "--gpus-per-worker", 0, "--threads", 1, "--storage", url, cwd=tmp_path, env=ENV, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(re.findall(r"^worker \d on .* exited 0: .*study budget spent", ran.stdout, re.M)) == 2, ran.stdout
    trials = _trials(url, "fixed")
    assert len(trials) == 6 and all(t.state.is_finished() and t.state.name != "FAIL" for t in trials)
    workers = [t.user_attrs[attrs.WORKER] for t in trials]
    assert all(w["device"] == "cpu" and w["host"] for w in workers)
    assert len({w["pid"] for w in workers}) == 2, "both actors' workers trained trials"


def test_fill_places_a_worker_on_a_node_that_joins(tiny, tmp_path, head):
    url = _create(tiny, tmp_path, "fill", n_trials=8, max_steps=30)
    launcher = subprocess.Popen([sys.executable, "-m", "search.cli", "ray-workers", "fill", "--address", head, "--fill",
                                 "--cpus-per-worker", "1", "--gpus-per-worker", "0", "--threads", "1",
                                 "--storage", url], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    lines, started = [], threading.Event()

    def read():
        for line in launcher.stdout:
            lines.append(line)
            if line.startswith("worker 1 started"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    node = None
    try:
        assert started.wait(60), "".join(lines)
        node = RayNode("--address", head, "--num-cpus", "1")
        assert launcher.wait(timeout=120) == 0, "".join(lines)
    finally:
        launcher.kill()
        if node:
            node.stop()
    reader.join(10)
    out = "".join(lines)
    assert "worker 2 started" in out, out
    pids = re.findall(r"^worker \d on \S+ pid (\d+) exited 0", out, re.M)
    assert len(set(pids)) == 2, out
    trials = _trials(url, "fill")
    assert len(trials) == 8 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)


def test_sigterm_to_the_launcher_requeues_the_workers_trials(tiny, tmp_path, head):
    url = _create(tiny, tmp_path, "stopped", n_trials=20, max_steps=400)
    launcher = subprocess.Popen([sys.executable, "-m", "search.cli", "ray-workers", "stopped", "--address", head,
                                 "--num-workers", "1", "--cpus-per-worker", "0.5", "--gpus-per-worker", "0",
                                 "--threads", "1", "--storage", url], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not [t for t in _trials(url, "stopped") if t.state.name == "RUNNING" and t.intermediate_values]:
            assert time.time() < deadline and launcher.poll() is None, launcher.stdout.read()
            time.sleep(0.5)
        launcher.terminate()
        out = launcher.communicate(timeout=60)[0]
    finally:
        launcher.kill()
    assert launcher.returncode == 0, out
    assert re.search(r"^worker 1 on .* exited 0: .*queued again to resume from its checkpoint \(interrupted\)", out, re.M), out
    trials = _trials(url, "stopped")
    assert not [t for t in trials if t.state.name == "RUNNING"], "the worker ended its trial before leaving"
    interrupted = [t for t in trials if t.state.name == "FAIL"]
    assert len(interrupted) == 1 and "interrupted" in interrupted[0].user_attrs[attrs.ERROR]
    assert [t.user_attrs.get(attrs.RESUME_OF) for t in trials if t.state.name == "WAITING"] == [interrupted[0].number]


@pytest.mark.parametrize("args, expected", [
    (["--address", "ADDRESS", "--num-workers", "1"], "no Ray cluster at 127.0.0.1:"),
    (["--address", "nowhere", "--num-workers", "1"], "--address takes HOST:PORT"),
    (["--address", "ADDRESS", "--num-workers", "2", "--fill"], "give one of --num-workers N and --fill"),
    (["--address", "ADDRESS"], "give one of --num-workers N and --fill"),
    (["--address", "ADDRESS", "--fill", "--gpus-per-worker", "0", "--cpus-per-worker", "0"], "--fill needs"),
])
def test_bad_input_is_one_line_and_fast(tmp_path, args, expected):
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    started = time.time()
    result = tunefleet("ray-workers", "s", *[address if a == "ADDRESS" else a for a in args], cwd=tmp_path, env=ENV,
                       timeout=30)
    assert result.returncode == 2
    assert_one_line_error(result, expected)
    assert time.time() - started < 10


def test_a_missing_study_is_one_line_before_any_actor(tmp_path, head):
    result = tunefleet("ray-workers", "nope", "--address", head, "--num-workers", 1,
                       "--storage", f"journal:{tmp_path / 'j.log'}", cwd=tmp_path, env=ENV, timeout=30)
    assert result.returncode == 2
    assert_one_line_error(result, "no study named 'nope'")


def test_a_worker_of_two_ranks_is_placed_with_its_resources_together(tiny, tmp_path, head):
    url = _create(tiny, tmp_path, "ranks", n_trials=1, max_steps=20)
    ran = tunefleet("ray-workers", "ranks", "--address", head, "--num-workers", 1, "--gpus-per-trial", 2,
                    "--cpus-per-worker", 0.5, "--gpus-per-worker", 0, "--threads", 1, "--storage", url,
                    cwd=tmp_path, env=ENV, timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (trial,) = _trials(url, "ranks")
    assert trial.state.name == "COMPLETE", ran.stdout + ran.stderr
    assert trial.user_attrs[attrs.WORKER]["world_size"] == 2
    assert {r for r in ("0", "1") if f"rank {r}: trial 0 left training at step 20" in ran.stdout} == {"0", "1"}
