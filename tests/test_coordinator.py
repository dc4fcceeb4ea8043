"""Study-wide stopping and the coordinator: `study stop` drains the workers, the
coordinator re-queues a dead worker's trial and stops a study at its budget."""

from __future__ import annotations

import datetime
import json
import os
import signal
import time

import optuna
from conftest import cli_env, free_port, start_tunefleet, tunefleet
from optuna.trial import TrialState

from search import attrs, budget
from search.spec import StudySpec
from storage import open_storage


def _wait_for(condition, what: str, timeout: float, process=None):
    deadline = time.time() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"exited before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_study_stop_drains_the_workers_and_resume_starts_it_again(tiny, tmp_path):
    model, dataset = tiny
    assert tunefleet("study", "create", "drain", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 8, "--max-steps", 30, "--eval-steps", 10, "--seq-len", 48,
                     cwd=tmp_path).returncode == 0
    worker = start_tunefleet("worker", "drain", "--threads", 1, cwd=tmp_path)
    study = optuna.load_study(study_name="drain", storage=open_storage(f"journal:{tmp_path}/.tunefleet/journal.log"))
    _wait_for(lambda: any(t.state.is_finished() for t in study.get_trials()), "a finished trial", 120, worker)
    stopped = tunefleet("study", "stop", "drain", cwd=tmp_path)
    assert stopped.returncode == 0 and "no new trial starts" in stopped.stdout
    log = worker.communicate(timeout=120)[0]
    assert worker.returncode == 0 and "stopped by request; exiting" in log, log
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state.is_finished()]) < 8
    status = json.loads(tunefleet("status", "drain", "--json", cwd=tmp_path).stdout)
    assert status["stopped"] == "stopped by request"
    resumed = tunefleet("study", "create", "drain", "--model", model, "--dataset", dataset, "--method", "lora",
                        "--n-trials", 8, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(tunefleet("status", "drain", "--json", cwd=tmp_path).stdout)["stopped"] is None


def test_coordinator_requeues_a_dead_workers_trial_and_stops_at_the_target(tiny, tmp_path, pg_url):
    model, dataset = tiny
    assert tunefleet("study", "create", "fleet", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 5, "--pruner", "none", "--max-steps", 40, "--eval-steps", 10, "--seq-len", 48, "--lease-seconds", 2,
                     "--target-value", 100, "--storage", pg_url, cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="fleet", storage=open_storage(pg_url))
    worker = start_tunefleet("worker", "fleet", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
    _wait_for(lambda: study.get_trials(states=(TrialState.RUNNING,)), "a running trial", 120, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    time.sleep(2.5)  # the lease runs out

    swept = tunefleet("coordinator", "--once", "--storage", pg_url, cwd=tmp_path)
    assert swept.returncode == 0 and "fleet: trial 0 queued again to resume from its checkpoint (lease expired)" in swept.stderr, swept.stderr
    dead, queued = study.get_trials()
    assert dead.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert queued.user_attrs[attrs.RESUME_OF] == 0
    again = tunefleet("coordinator", "--once", "--storage", pg_url, cwd=tmp_path)
    assert "queued again" not in again.stderr, "restarted, it does nothing twice"

    worked = tunefleet("worker", "fleet", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
    assert worked.returncode == 0 and "target reached" in worked.stderr, worked.stderr
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE], "none after the target"
    swept = tunefleet("coordinator", "--once", "--storage", pg_url, cwd=tmp_path)
    assert "fleet: stopped: target reached" in swept.stderr
    assert "target reached" in study.user_attrs[attrs.STOP]["reason"]


def _ran(minutes_ago_start: float, minutes_ago_end: float | None, now: float, ranks: int = 1):
    at = lambda m: datetime.datetime.fromtimestamp(now - 60 * m)  # noqa: E731
    return optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=TrialState.COMPLETE if minutes_ago_end is not None else TrialState.RUNNING,
        value=1.0 if minutes_ago_end is not None else None, datetime_start=at(minutes_ago_start),
        datetime_complete=at(minutes_ago_end) if minutes_ago_end is not None else None,
        params={}, distributions={}, user_attrs={attrs.WORKER: {"world_size": ranks}}, system_attrs={},
        intermediate_values={})


def test_gpu_hour_and_wall_budgets():
    now = time.time()
    spec = StudySpec(model="m", dataset="d", method="lora", n_examples=100, max_gpu_hours=1.0)
    study = optuna.create_study()
    for trial in (_ran(50, 40, now), _ran(40, 10, now)):  # 10 + 30 minutes
        study.add_trial(trial)
    assert abs(budget.gpu_hours(study.get_trials(), now) - 40 / 60) < 1e-6
    assert budget.stop_reason(study, spec, now) is None
    # A running trial counts up to now: one started 25 minutes ago crosses the hour.
    assert abs(budget.gpu_hours(study.get_trials() + [_ran(25, None, now)], now) - 65 / 60) < 1e-6
    study.add_trial(_ran(25, 0, now))
    assert budget.stop_reason(study, spec, now).startswith("GPU-hour budget spent (1.083 of 1 h)")
    # A trial over four GPUs spends four GPU-hours an hour.
    assert abs(budget.gpu_hours([_ran(30, 15, now, ranks=4)], now) - 1.0) < 1e-6

    spec = StudySpec(model="m", dataset="d", method="lora", n_examples=100, max_wall_hours=2.0)
    study.set_user_attr(attrs.CREATED, now - 3600)
    assert budget.stop_reason(study, spec, now) is None
    assert budget.stop_reason(study, spec, now + 3601).startswith("wall-time budget spent")


def test_gpu_hours_do_not_depend_on_time_zones(tiny, tmp_path, pg_url):
    """Behind the coordinator, Optuna's trial times travel as naive local times of the
    coordinator's machine: a worker in Paris reading a coordinator in UTC must not count an
    hour more of GPU time (it would stop the study early)."""
    model, dataset = tiny
    assert tunefleet("study", "create", "tz", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 1, "--pruner", "none", "--max-steps", 5000, "--eval-steps", 1000,
                     "--max-gpu-hours", 0.5, "--storage", pg_url, cwd=tmp_path).returncode == 0
    port = free_port()
    coordinator = start_tunefleet("coordinator", "--serve", f"127.0.0.1:{port}", "--interval", 0.5,
                                  "--storage", pg_url, cwd=tmp_path, env=cli_env(TZ="UTC"))
    paris = cli_env(TZ="Europe/Paris")
    started = time.time()
    worker = start_tunefleet("worker", "tz", "--threads", 1, "--storage", f"grpc://127.0.0.1:{port}", cwd=tmp_path,
                             env=paris)
    try:
        study = optuna.load_study(study_name="tz", storage=open_storage(pg_url))
        _wait_for(lambda: study.get_trials(states=(TrialState.RUNNING,)), "a running trial", 120, worker)
        os.environ["TZ"] = "Europe/Paris"  # this process now reads the trials as the worker does
        time.tzset()
        seen = optuna.load_study(study_name="tz", storage=open_storage(f"grpc://127.0.0.1:{port}")).get_trials()
        used_s = budget.gpu_hours(seen, time.time()) * 3600
        assert 0 < used_s <= time.time() - started, used_s
        assert worker.poll() is None and coordinator.poll() is None, "nobody stopped the study"
    finally:
        os.environ.pop("TZ", None)
        time.tzset()
        for process in (worker, coordinator):
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=60)


def test_a_study_deleted_under_its_workers_ends_them_with_one_line(tiny, tmp_path, pg_url):
    """One worker trains the study's only trial, another waits for more behind the coordinator;
    the study is deleted: both leave with one line, the training one at its next lease renewal
    (not at its next evaluation, 1000 steps away), none waits for ever."""
    model, dataset = tiny
    assert tunefleet("study", "create", "gone", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 1, "--pruner", "none", "--max-steps", 5000, "--eval-steps", 1000,
                     "--lease-seconds", 4, "--storage", pg_url, cwd=tmp_path).returncode == 0
    port = free_port()
    coordinator = start_tunefleet("coordinator", "--serve", f"127.0.0.1:{port}", "--interval", 0.5,
                                  "--storage", pg_url, cwd=tmp_path)
    workers = [start_tunefleet("worker", "gone", "--threads", 1, "--storage", f"grpc://127.0.0.1:{port}",
                               cwd=tmp_path) for _ in range(2)]
    try:
        study = optuna.load_study(study_name="gone", storage=open_storage(pg_url))
        _wait_for(lambda: study.get_trials(states=(TrialState.RUNNING,)), "a running trial", 120, workers[0])
        time.sleep(3)  # the other worker is waiting for a trial that may come
        deleted = tunefleet("study", "delete", "gone", "--storage", pg_url, cwd=tmp_path)
        assert deleted.returncode == 0, deleted.stderr
        logs = [w.communicate(timeout=90)[0] for w in workers]
    finally:
        for process in (*workers, coordinator):
            if process.poll() is None:
                process.kill()
        coordinator.communicate(timeout=30)
    for worker, log in zip(workers, logs):
        assert worker.returncode == 2 and "Traceback" not in log, log
        assert log.strip().splitlines()[-1].endswith("study 'gone' was deleted; exiting"), log
