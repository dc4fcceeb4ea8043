"""Chaos, bounded: PostgreSQL restarted under a running worker (with its own
connection, or behind the coordinator, which waits it out too). The worker waits
for it, abandons the trial it could not report (its lease runs out), and the
study completes with every trial finished once and nothing stuck. Then SIGKILLs
in a loop, and a worker frozen past its lease."""

from __future__ import annotations

import time

import optuna
import pytest
from conftest import free_port, kept_artifacts, start_tunefleet, tunefleet
from optuna.trial import TrialState

from search import budget
from storage import open_storage


@pytest.mark.parametrize("route", ["database", "coordinator"])
def test_postgresql_restart_mid_study(tiny, tmp_path, private_postgres, route):
    model, dataset = tiny
    url = private_postgres.url()
    assert tunefleet("study", "create", "chaos", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 3, "--max-steps", 40, "--eval-steps", 10, "--seq-len", 48, "--lease-seconds", 3,
                     "--storage", url, cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="chaos", storage=open_storage(url))
    coordinator, worker_url = None, url
    if route == "coordinator":
        port = free_port()
        coordinator = start_tunefleet("coordinator", "--serve", f"127.0.0.1:{port}", "--interval", 0.5,
                                      "--connections", 4, "--storage", url, cwd=tmp_path)
        worker_url = f"grpc://127.0.0.1:{port}"
    worker = start_tunefleet("worker", "chaos", "--threads", 1, "--storage", worker_url, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while not any(t.intermediate_values for t in study.get_trials(states=(TrialState.RUNNING,))):
            assert time.time() < deadline and worker.poll() is None, "no trial reached an evaluation"
            time.sleep(0.2)
        private_postgres.stop()
        time.sleep(6)  # longer than the lease: the trial must be re-queued, not continued
        private_postgres.start()
        log = worker.communicate(timeout=240)[0]
    finally:  # nothing of the test outlives it, whatever failed
        if worker.poll() is None:
            worker.kill()
        if coordinator is not None:
            coordinator.terminate()
            coordinator_log = coordinator.communicate(timeout=30)[0]
    assert worker.returncode == 0, log
    assert "storage unreachable" in log and "storage is back" in log, log
    assert "Traceback" not in log
    if coordinator is not None:
        assert coordinator.returncode == 0 and "Traceback" not in coordinator_log, coordinator_log
        assert "storage unreachable" in coordinator_log and "storage is back" in coordinator_log, coordinator_log

    study = optuna.load_study(study_name="chaos", storage=open_storage(url))
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # asha (the default) pauses and promotes: the budget counts configurations, not trials.
    assert budget.configurations(finished) == 3, [(t.number, t.state.name) for t in trials]
    assert [t for t in trials if t.state == TrialState.COMPLETE]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [t for t in trials if t.state == TrialState.FAIL], "the cut-off trial failed and was re-queued"


def test_five_sigkills_in_one_study_lose_nothing(tiny, tmp_path, pg_url):
    import json
    import signal

    from search import attrs
    from storage import backend
    from workers.callback import CONVERGENCE

    model, dataset = tiny
    assert tunefleet("study", "create", "kills", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 2, "--max-steps", 60, "--eval-steps", 10, "--seq-len", 48, "--lease-seconds", 2,
                     "--max-resumes", 10, "--pruner", "none", "--storage", pg_url, cwd=tmp_path).returncode == 0
    storage = open_storage(pg_url)
    study = optuna.load_study(study_name="kills", storage=storage)
    seen: set[str] = set()
    for kill in range(5):
        worker = start_tunefleet("worker", "kills", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
        deadline = time.time() + 120
        while True:  # a checkpoint this worker wrote: it made progress before it dies
            running = study.get_trials(states=(TrialState.RUNNING,))
            pointers = [t.system_attrs.get(attrs.CHECKPOINT) for t in running]
            fresh = [p for p in pointers if p and p["artifact"] not in seen]
            if fresh:
                seen.update(p["artifact"] for p in fresh)
                break
            assert time.time() < deadline and worker.poll() is None, f"kill {kill}: no progress"
            time.sleep(0.1)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        time.sleep(2.2)  # the lease runs out
    last = tunefleet("worker", "kills", "--threads", 1, "--storage", pg_url, cwd=tmp_path, timeout=300)
    assert last.returncode == 0, last.stderr

    trials = study.get_trials()
    states = [t.state for t in trials]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 2, [(t.number, t.state.name) for t in trials]
    assert states.count(TrialState.FAIL) == 5 and TrialState.RUNNING not in states and TrialState.WAITING not in states
    store = backend(pg_url).artifacts(storage)
    for t in finished:  # a detector may end one early: then its run stops at its verdict's step
        ended = t.user_attrs.get(attrs.PRUNE) or t.user_attrs.get(attrs.EARLY_STOP)
        end = ended["step"] if ended else 60
        # Every evaluation up to the end, none missing (a verdict from the train log at an evaluation
        # step, such as a divergence, comes before that step's evaluation).
        evaluated = sorted(t.intermediate_values)
        assert evaluated == list(range(10, 10 * len(evaluated) + 1, 10)), "no intermediate value lost"
        assert end - 10 <= (evaluated[-1] if evaluated else 0) <= end, (evaluated, ended)
        if ended is None or ended["detector"] in CONVERGENCE:  # judged at an evaluation: it is there
            assert evaluated[-1] == end, (evaluated, ended)
        files = {json.loads(v)["filename"]: json.loads(v)["artifact_id"]
                 for k, v in t.system_attrs.items() if k.startswith("artifacts:")}
        with store.open_reader(files[f"trial-{t.number}-curves.json"]) as f:
            steps = [s for s, _ in json.load(f)["series"]["train_loss"]]
        assert steps == list(range(1, end + 1)), "one unbroken run, whatever the kills"
    # Five killed trials' checkpoints, and whatever a kill cut off mid-save, are gone.
    from sqlalchemy import text

    from storage.pg_artifacts import TABLE

    with store.engine.connect() as conn:
        present = {row[0] for row in conn.execute(text(f"SELECT DISTINCT artifact_id FROM {TABLE}"))}
    assert present == kept_artifacts(pg_url, "kills")


def test_a_worker_frozen_past_its_lease_comes_back_without_harm(tiny, tmp_path, pg_url):
    """SIGSTOP stands in for a worker cut off from the database: it cannot renew
    its lease. Another worker resumes the trial; when the first wakes up it
    finds its trial taken and drops it, writing nothing."""
    import signal

    model, dataset = tiny
    assert tunefleet("study", "create", "frozen", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 1, "--max-steps", 80, "--eval-steps", 10, "--seq-len", 48, "--lease-seconds", 2,
                     "--pruner", "none", "--storage", pg_url, cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="frozen", storage=open_storage(pg_url))
    first = start_tunefleet("worker", "frozen", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
    deadline = time.time() + 120
    while not any(t.intermediate_values for t in study.get_trials(states=(TrialState.RUNNING,))):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.1)
    first.send_signal(signal.SIGSTOP)
    before = study.get_trials()[0]
    second = start_tunefleet("worker", "frozen", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
    while len(study.get_trials(states=(TrialState.RUNNING,))) == 0 or study.get_trials()[0].state != TrialState.FAIL:
        assert time.time() < deadline + 60 and second.poll() is None
        time.sleep(0.1)
    first.send_signal(signal.SIGCONT)  # back while the resumed trial runs
    log_first, log_second = first.communicate(timeout=180)[0], second.communicate(timeout=180)[0]
    assert first.returncode == 0 and second.returncode == 0, log_first + log_second
    assert "trial 0 dropped" in log_first, log_first
    dead, resumed = study.get_trials()
    assert dead.state == TrialState.FAIL and resumed.state == TrialState.COMPLETE
    assert dead.intermediate_values == before.intermediate_values, "the late worker wrote nothing"
    assert sorted(resumed.intermediate_values) == list(range(10, 81, 10))
