"""Trials over several ranks (`tunefleet worker --gpus-per-trial 2`), here as CPU ranks over
gloo: the same launcher, rank protocol and DDP Trainer as on GPUs."""

from __future__ import annotations

import json
import re
import signal
import time

import optuna
import psutil
import pytest
from conftest import start_tunefleet, tunefleet
from optuna.trial import TrialState

from search import attrs
from storage import backend, open_storage


def _create(tiny, tmp_path, name, *extra, n_trials=1, max_steps=20, eval_steps=5, space=None):
    model, dataset = tiny
    args = ["study", "create", name, "--model", model, "--dataset", dataset, "--method", "lora", "--n-trials", n_trials,
            "--pruner", "none", "--max-steps", max_steps, "--eval-steps", eval_steps, "--seq-len", 48, *extra]
    if space:
        (tmp_path / f"{name}.json").write_text(json.dumps(space))
        args += ["--space", tmp_path / f"{name}.json"]
    created = tunefleet(*args, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{tmp_path / '.tunefleet/journal.log'}"))


def _series(tmp_path, study, trial) -> dict:
    """The trial's curves as the worker uploaded them (train loss and gradient norm by step)."""
    from optuna.artifacts import get_all_artifact_meta

    url = f"journal:{tmp_path / '.tunefleet/journal.log'}"
    storage = open_storage(url)
    store = backend(url).artifacts(storage)
    (meta,) = [m for m in get_all_artifact_meta(trial, storage=storage) if m.filename.endswith(".json")]
    with store.open_reader(meta.artifact_id) as f:
        return json.load(f)["series"]


def _ranks_left(log: str, trial: int) -> dict[int, int]:
    """rank -> the step at which it left training on that trial, as each rank logged it."""
    return {int(r): int(s) for r, s in re.findall(rf"rank (\d+): trial {trial} left training at step (\d+)", log)}


def test_a_two_rank_study_trains_as_one_rank_does(tiny, tmp_path):
    """Each rank takes half of every effective batch: the same examples per optimizer step, so
    the same train losses; eval batches group differently over two ranks, so eval losses differ
    by the Trainer's per-batch averaging (0.4% measured), within 1%."""
    # Dropout's random masks differ between ranks; the learning rate fixed,
    # so that the second (sampled) trial cannot diverge and end early.
    no_dropout = {"lora_dropout": {"value": 0.0}, "learning_rate": {"value": 3e-3}}
    one = _create(tiny, tmp_path, "one", space=no_dropout)
    two = _create(tiny, tmp_path, "two", n_trials=2, space=no_dropout)
    assert tunefleet("worker", "one", "--threads", 1, cwd=tmp_path).returncode == 0
    ran = tunefleet("worker", "two", "--gpus-per-trial", 2, "--threads", 1, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    trials = two.get_trials()
    assert len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials), ran.stderr
    assert all(t.user_attrs[attrs.WORKER]["world_size"] == 2 and t.user_attrs[attrs.BATCH]["ranks"] == 2
               for t in trials)
    for t in trials:  # the effective batch is exact: micro-batch x accumulation x ranks
        batch = t.user_attrs[attrs.BATCH]
        assert batch["micro_batch"] * batch["accumulation"] * 2 == t.params["batch_size"]
        left = _ranks_left(ran.stderr, t.number)
        assert set(left) == {0, 1} and len(set(left.values())) == 1, left
    alone, together = one.trials[0], trials[0]  # the same first configuration (the prior's mode)
    assert alone.params == together.params
    assert together.user_attrs[attrs.COST]["tokens"] == alone.user_attrs[attrs.COST]["tokens"]
    a, b = _series(tmp_path, one, alone), _series(tmp_path, two, together)
    assert [s for s, _ in a["train_loss"]] == [s for s, _ in b["train_loss"]]
    assert [v for _, v in b["train_loss"]] == pytest.approx([v for _, v in a["train_loss"]], rel=1e-4)
    assert together.intermediate_values.keys() == alone.intermediate_values.keys()
    for key, value in alone.intermediate_values.items():
        assert together.intermediate_values[key] == pytest.approx(value, rel=0.01), key


def test_a_prune_stops_every_rank_at_the_same_step(tiny, tmp_path):
    """Rank 0 decides (here the plateau detector: a learning rate this high stalls the loss near
    the uniform guess) and every rank stops there."""
    study = _create(tiny, tmp_path, "hot", max_steps=60,
                    space={"learning_rate": {"value": 1.0}, "max_grad_norm": {"value": 1e6}})
    ran = tunefleet("worker", "hot", "--gpus-per-trial", 2, "--threads", 1, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (trial,) = study.get_trials()
    verdict = trial.user_attrs.get(attrs.PRUNE) or trial.user_attrs[attrs.EARLY_STOP]
    assert verdict["step"] < 60, verdict
    assert _ranks_left(ran.stderr, 0) == {0: verdict["step"], 1: verdict["step"]}, ran.stderr


def test_a_killed_rank_ends_the_trial_on_every_rank_and_it_resumes(tiny, tmp_path):
    study = _create(tiny, tmp_path, "kill", max_steps=400, eval_steps=10)
    launcher = start_tunefleet("worker", "kill", "--gpus-per-trial", 2, "--threads", 1, cwd=tmp_path)
    deadline = time.time() + 180
    while not any(attrs.CHECKPOINT in t.system_attrs for t in study.get_trials()):
        assert time.time() < deadline and launcher.poll() is None, "no checkpoint"
        time.sleep(0.5)
    (rank1,) = [p for p in psutil.Process(launcher.pid).children() if p.environ().get("RANK") == "1"]
    rank1.send_signal(signal.SIGKILL)
    log = launcher.communicate(timeout=300)[0]
    assert launcher.returncode == 0, log
    first, resumed = study.get_trials()
    assert first.state == TrialState.FAIL and "a rank failed" in first.user_attrs[attrs.ERROR], log
    assert resumed.user_attrs[attrs.RESUME_OF] == 0 and resumed.state == TrialState.COMPLETE
    assert resumed.user_attrs[attrs.BATCH]["started_at_step"] > 0, "resumed from its checkpoint"
    assert "starting the group's 2 ranks again" in log
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_out_of_memory_on_the_ranks_resumes_the_trial_at_half_the_micro_batch(tiny, tmp_path):
    # Batch 16: 8 a rank, a micro-batch above the injected limit of 4.
    study = _create(tiny, tmp_path, "oom", space={"batch_size": {"value": 16}})
    ran = tunefleet("worker", "oom", "--gpus-per-trial", 2, "--threads", 1, "--inject-oom-above", 4, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    first, resumed = study.get_trials()
    assert first.state == TrialState.FAIL and "OutOfMemoryError" in first.user_attrs[attrs.ERROR]
    assert resumed.state == TrialState.COMPLETE and resumed.user_attrs[attrs.RESUME_OF] == 0
    assert resumed.user_attrs[attrs.BATCH] | {"started_at_step": 0} == {
        "micro_batch": 4, "accumulation": 2, "oom_retries": 1, "ranks": 2, "started_at_step": 0, "peak_memory_gib": None}


def test_gpus_split_into_groups_of_a_trial():
    from workers.multi_gpu import groups_of, parse_gpus

    assert parse_gpus("0-3,6,7") == ["0", "1", "2", "3", "6", "7"] and parse_gpus("2") == ["2"]
    assert groups_of(parse_gpus("0-7"), 4) == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    assert groups_of(None, 2) == [None], "no --gpus: one group of what the process sees (or CPU ranks)"
    for bad in ("0-", "3-1", "0,0", "a", ""):
        with pytest.raises(ValueError, match="distinct GPU indices"):
            parse_gpus(bad)


@pytest.mark.parametrize("args, expected", [
    (["--gpus", "0-2", "--gpus-per-trial", "2"], "3 GPUs do not split into trials of 2"),
    (["--gpus", "1-0"], "distinct GPU indices"),
    (["--gpus-per-trial", "0"], "--gpus-per-trial"),
])
def test_bad_gpu_options_are_one_line(tmp_path, args, expected):
    ran = tunefleet("worker", "nothing", *args, cwd=tmp_path)
    assert ran.returncode == 2 and expected in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
