"""A worker killed mid-trial (SIGKILL: no chance to clean up) loses its lease;
the trial is queued again and another worker finishes it from its checkpoint,
continuing its intermediate values instead of starting over."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
from conftest import start_tunefleet, tunefleet
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from search import attrs
from storage import backend, open_storage


def _wait_for(condition, what: str, timeout: float, worker=None):
    deadline = time.time() + timeout
    while not (value := condition()):
        assert worker is None or worker.poll() is None, f"the worker died before {what}: {worker.stdout.read()}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def test_a_killed_workers_trial_is_finished_by_another_from_its_checkpoint(tiny, tmp_path, pg_url):
    model, dataset = tiny
    created = tunefleet("study", "create", "crash", "--model", model, "--dataset", dataset, "--method", "lora",
                        "--n-trials", 1, "--pruner", "none", "--max-steps", 60, "--eval-steps", 10, "--seq-len", 48,
                        "--lease-seconds", 3, "--storage", pg_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    storage = open_storage(pg_url)
    study = optuna.load_study(study_name="crash", storage=storage)

    first = start_tunefleet("worker", "crash", "--threads", 1, "--storage", pg_url, cwd=tmp_path)
    def checkpointed():
        running = study.get_trials(states=(TrialState.RUNNING,))
        pointer = running and running[0].system_attrs.get(attrs.CHECKPOINT)
        return pointer if pointer and pointer["step"] >= 20 else None
    pointer = _wait_for(checkpointed, "a checkpoint at step 20", 120, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    (dead,) = study.get_trials()
    assert dead.state == TrialState.RUNNING, "SIGKILL left the trial running: only its lease can tell"
    assert dead.intermediate_values and max(dead.intermediate_values) >= pointer["step"]

    second = tunefleet("worker", "crash", "--threads", 1, "--storage", pg_url, cwd=tmp_path, timeout=240)
    assert second.returncode == 0, second.stderr
    assert "trial 0 queued again to resume from its checkpoint (lease expired)" in second.stderr
    dead, resumed = study.get_trials()
    assert dead.state == TrialState.FAIL and "lease expired" in dead.user_attrs[attrs.ERROR]
    assert resumed.state == TrialState.COMPLETE, second.stderr
    assert resumed.user_attrs[attrs.RESUME_OF] == dead.number and resumed.params == dead.params
    # The dead trial's values up to its checkpoint are carried over exactly; the rest are new.
    step = pointer["step"]
    assert {s: v for s, v in resumed.intermediate_values.items() if s <= step} == \
        {s: v for s, v in dead.intermediate_values.items() if s <= step}
    assert sorted(resumed.intermediate_values) == list(range(10, 61, 10))

    # The Trainer started at the checkpoint's step, not at 0...
    assert resumed.user_attrs[attrs.BATCH]["started_at_step"] == step
    # ...and the resumed trial's cost is what it trained itself (the dead one's was recorded at its
    # last evaluation): both trained at the same tokens per step, not the inherited steps again.
    dead_rate = dead.user_attrs[attrs.COST]["tokens"] / max(dead.intermediate_values)
    resumed_rate = resumed.user_attrs[attrs.COST]["tokens"] / (60 - step)
    assert 0.75 < resumed_rate / dead_rate < 1.33, (dead.user_attrs[attrs.COST], resumed.user_attrs[attrs.COST])
    # ...and the curve is one unbroken run of 60 logged steps, none repeated.
    store = backend(pg_url).artifacts(storage)
    files = {json.loads(v)["filename"]: json.loads(v)["artifact_id"]
             for k, v in resumed.system_attrs.items() if k.startswith("artifacts:")}
    with store.open_reader(files[f"trial-{resumed.number}-curves.json"]) as f:
        series = json.load(f)["series"]
    assert [s for s, _ in series["train_loss"]] == list(range(1, 61))
    # The finished trial keeps the checkpoint of its best evaluation (the one `best` reports),
    # and no other.
    best = resumed.system_attrs[attrs.BEST_CHECKPOINT]
    assert best["value"] == resumed.value == min(resumed.intermediate_values.values())
    store.open_reader(best["artifact"]).close()
    latest = resumed.system_attrs[attrs.CHECKPOINT]["artifact"]
    if latest != best["artifact"]:
        with pytest.raises(ArtifactNotFound):
            store.open_reader(latest)
