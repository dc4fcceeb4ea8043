"""Trial checkpoints in the artifact store, and resuming a trial from one.

The Trainer saves a checkpoint (adapter or weights, optimizer, scheduler, RNG,
step, log history) at every evaluation; it goes to the artifact store as one
tar under a new id, the trial's pointer moves to it, and only then is the
previous one removed, so a worker killed at any moment leaves a trial whose
pointer names a whole checkpoint.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path

from transformers import TrainerCallback

from search import attrs


class CheckpointCallback(TrainerCallback):
    """Uploads each checkpoint the Trainer saves and points the trial at it."""

    def __init__(self, trial, artifact_store):
        self.trial, self.store = trial, artifact_store

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        storage, trial_id = self.trial.storage, self.trial._trial_id
        previous = storage.get_trial_system_attrs(trial_id).get(attrs.CHECKPOINT)
        artifact = str(uuid.uuid4())
        with tempfile.TemporaryFile() as f:
            with tarfile.open(fileobj=f, mode="w") as tar:
                tar.add(folder, arcname=".")
            f.seek(0)
            self.store.write(artifact, f)
        storage.set_trial_system_attr(trial_id, attrs.CHECKPOINT, {"artifact": artifact, "step": state.global_step})
        if previous and previous["artifact"] != artifact:
            _remove(self.store, previous["artifact"])


def restore(study, trial, artifact_store, output_dir: Path) -> Path | None:
    """For a trial that resumes another (lease expired): the other's checkpoint unpacked
    into output_dir, its intermediate values up to that step reported again, and the
    pointer taken over. None when there is nothing to resume from."""
    number = trial.user_attrs.get(attrs.RESUME_OF)
    if number is None:
        return None
    (previous,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    previous = trial.storage.get_trial(previous._trial_id)  # as it is now: the list may be a snapshot old
    pointer = previous.system_attrs.get(attrs.CHECKPOINT)
    if pointer is None:  # it died before its first evaluation: start over
        return None
    from optuna.artifacts.exceptions import ArtifactNotFound

    folder = output_dir / f"checkpoint-{pointer['step']}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        with artifact_store.open_reader(pointer["artifact"]) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            tar.extractall(folder, filter="data")
    except ArtifactNotFound:  # removed by hand, or a store that lost it: start over
        return None
    for step, value in sorted(previous.intermediate_values.items()):
        if step <= pointer["step"]:
            trial.report(value, step)
    trial.storage.set_trial_system_attr(trial._trial_id, attrs.CHECKPOINT, pointer)
    return folder


def discard(trial, artifact_store) -> None:
    """Removes the trial's checkpoint once the trial has ended (its curves stay)."""
    pointer = trial.storage.get_trial_system_attrs(trial._trial_id).get(attrs.CHECKPOINT)
    if pointer:
        _remove(artifact_store, pointer["artifact"])


def _remove(store, artifact: str) -> None:
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        store.remove(artifact)
    except ArtifactNotFound:  # removed already (a resumed trial shares its first pointer)
        pass
