"""A worker's trial ends cleanly on SIGTERM and SIGINT, and a diverging trial is
pruned by the divergence detector during real training."""

from __future__ import annotations

import signal
import time

import optuna
import pytest
from conftest import start_tunefleet, tunefleet

from search import attrs
from search.study import load, space_of
from storage import open_storage


def test_sigint_and_sigterm_set_the_same_stop_flag():
    """One handler for both (search/signals.py): the training test below sends SIGTERM only."""
    import os

    from search.signals import Stop

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stop = Stop()
            assert not stop()
            os.kill(os.getpid(), signum)
            time.sleep(0.05)
            assert stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def test_signal_ends_the_running_trial_cleanly(tiny, tmp_path, signum=signal.SIGTERM):
    model, dataset = tiny
    created = tunefleet("study", "create", "long", "--model", model, "--dataset", dataset, "--method", "lora",
                        "--n-trials", 3, "--pruner", "none", "--max-steps", 5000, "--eval-steps", 1000, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    worker = start_tunefleet("worker", "long", "--threads", 1, cwd=tmp_path)
    storage = open_storage(f"journal:{tmp_path / '.tunefleet' / 'journal.log'}")
    study = optuna.load_study(study_name="long", storage=storage)
    deadline = time.time() + 120
    while not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        assert time.time() < deadline and worker.poll() is None, "the worker never started a trial"
        time.sleep(0.5)
    time.sleep(2)  # inside training steps
    worker.send_signal(signum)
    log = worker.communicate(timeout=60)[0]
    assert worker.returncode == 0, log
    trials = study.get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING], "no trial left RUNNING"
    interrupted = trials[0]
    assert interrupted.state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert len(retry) == 1 and retry[0].user_attrs[attrs.SOURCE] == "resume of trial 0 (interrupted)"
    assert retry[0].user_attrs[attrs.RESUME_OF] == 0 and retry[0].system_attrs["fixed_params"] == interrupted.params
    assert "interrupted; marked to resume" in log and "trial 0 queued again to resume from its checkpoint (interrupted)" in log


def test_diverging_trial_is_pruned_with_its_reason(tiny, tmp_path):
    model, dataset = tiny
    url = f"journal:{tmp_path / 'j.log'}"
    assert tunefleet("study", "create", "hot", "--model", model, "--dataset", dataset, "--method", "full",
                     "--n-trials", 3, "--pruner", "none", "--max-steps", 40, "--eval-steps", 10, "--storage", url,
                     cwd=tmp_path).returncode == 0
    study, spec = load(open_storage(url), "hot")
    # A learning rate far outside any sane space (queued by hand) makes full fine-tuning blow up.
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0]
    study.enqueue_trial({**waiting.params, "learning_rate": 3.0}, skip_if_exists=False)
    result = tunefleet("worker", "hot", "--threads", 1, "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seed, trial, retry = study.get_trials()
    assert seed.state == optuna.trial.TrialState.COMPLETE and trial.params["learning_rate"] == 3.0
    assert trial.state == optuna.trial.TrialState.PRUNED, result.stderr
    reason = trial.user_attrs[attrs.PRUNE]
    assert reason["detector"] == "divergence" and reason["step"] < 40
    assert reason["evidence"]["rule"]
    # 002's adjustment, once: the same params at half the learning rate, marked as such.
    # (3.0 was queued by hand outside the space; the retry stays inside it.)
    half = space_of(spec)["learning_rate"].nearest(1.5)
    assert retry.params == {**trial.params, "learning_rate": half} and half < 3.0
    assert retry.user_attrs[attrs.RETRY_OF] == trial.number and "half the learning rate" in result.stderr
    assert retry.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(study.get_trials()) == 3, "a retry is never retried: the adjustment is applied once"


def test_a_hung_trainer_is_ended_resumed_elsewhere_and_its_worker_exits(tiny, tmp_path):
    """A lease proves the process lives, not that the trial moves: a training step that never
    returns (injected) ends the trial to resume, and the worker, which cannot interrupt it, exits."""
    from workers.ranks import GROUP_BROKEN

    model, dataset = tiny
    url = f"journal:{tmp_path / 'j.log'}"
    assert tunefleet("study", "create", "hang", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 1, "--pruner", "none", "--max-steps", 30, "--eval-steps", 10,
                     "--stall-seconds", 3, "--lease-seconds", 2, "--storage", url, cwd=tmp_path).returncode == 0
    started = time.time()
    hung = tunefleet("worker", "hang", "--threads", 1, "--storage", url, "--inject-stall-at", 15, cwd=tmp_path)
    assert hung.returncode == GROUP_BROKEN and time.time() - started < 120, hung.stderr
    assert "trial 0 hung: no training step for" in hung.stderr, hung.stderr
    study, _ = load(open_storage(url), "hang")
    (ended,) = study.get_trials()
    assert ended.state == optuna.trial.TrialState.FAIL and ended.user_attrs[attrs.ERROR].startswith("hung")
    assert ended.intermediate_values, "it had reached an evaluation: it resumes from there"
    again = tunefleet("worker", "hang", "--threads", 1, "--storage", url, cwd=tmp_path)
    assert again.returncode == 0 and "trial 0 queued again to resume from its checkpoint (hung)" in again.stderr
    ended, resumed = study.get_trials()
    assert resumed.user_attrs[attrs.RESUME_OF] == 0 and resumed.state == optuna.trial.TrialState.COMPLETE
    assert resumed.user_attrs[attrs.BATCH]["started_at_step"] == 10, "resumed from its checkpoint"


def test_a_trial_past_its_wall_clock_cap_stops_where_it_is(tiny, tmp_path):
    model, dataset = tiny
    url = f"journal:{tmp_path / 'j.log'}"
    # A learning rate that keeps improving the loss for far longer than the cap: a plateau (which
    # completes a trial) cannot come first, whatever the sampler would have drawn.
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: 8e-3\n")
    assert tunefleet("study", "create", "capped", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 2, "--pruner", "none", "--max-steps", 20000, "--eval-steps", 10,
                     "--max-trial-hours", 0.001, "--space", space, "--storage", url, cwd=tmp_path).returncode == 0
    result = tunefleet("worker", "capped", "--threads", 1, "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = load(open_storage(url), "capped")[0].get_trials()
    # The study's first result completes (a study never ends without one); the next is pruned.
    assert first.state == optuna.trial.TrialState.COMPLETE and first.user_attrs[attrs.EARLY_STOP]["detector"] == "wall-clock cap"
    assert second.state == optuna.trial.TrialState.PRUNED and second.user_attrs[attrs.PRUNE]["detector"] == "wall-clock cap", (second.user_attrs, result.stderr[-3000:])
    assert "pruned by wall-clock cap" in result.stderr
    for t in (first, second):
        assert t.user_attrs[attrs.PRUNE if t is second else attrs.EARLY_STOP]["step"] < 20000
