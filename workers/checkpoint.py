"""Trial checkpoints in the artifact store, and resuming a trial from one.

The Trainer saves a checkpoint (adapter or weights, optimizer, scheduler, RNG,
step, log history) at every evaluation; it goes to the artifact store as one
tar under a new id, the trial's pointer moves to it, and only then is the
previous one removed, so a worker killed at any moment leaves a trial whose
pointer names a whole checkpoint. The ids a save may leave behind unpointed if
killed midway (the upload, the checkpoints it replaces) are written on the trial
first, so that the study's end removes them (release_unkept).
"""

from __future__ import annotations

import math
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path

from transformers import TrainerCallback

from search import attrs
from storage import optuna_compat as compat
from workers import disk


class CheckpointCallback(TrainerCallback):
    """Uploads each checkpoint the Trainer saves and points the trial at it: always as its
    latest (to resume from), and as its best when the evaluation just before it is the
    trial's best eval loss so far (the one a complete trial keeps)."""

    def __init__(self, trial, artifact_store, keys: dict[int, list[int]]):
        self.trial, self.store, self.keys = trial, artifact_store, keys
        self._losses: dict[int, float] = {}
        self._size: int | None = None  # bytes of the last checkpoint written

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save:  # room for the checkpoint and its tar, or a clear error before torch's
            size = self._size if self._size is not None else _estimate(model)
            disk.ensure_room(args.output_dir, 2 * size)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            self._losses[state.global_step] = float(metrics["eval_loss"])

    def on_save(self, args, state, control, **kwargs):
        step = state.global_step
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        self._size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        storage, trial_id = self.trial.storage, compat.trial_id(self.trial)
        pointers = storage.get_trial_system_attrs(trial_id)
        latest, best = pointers.get(attrs.CHECKPOINT), pointers.get(attrs.BEST_CHECKPOINT)
        artifact = str(uuid.uuid4())
        storage.set_trial_system_attr(trial_id, attrs.IN_FLIGHT, [artifact] + [p["artifact"] for p in (latest, best) if p])
        with tempfile.TemporaryFile() as f:
            with tarfile.open(fileobj=f, mode="w") as tar:
                tar.add(folder, arcname=".")
            f.seek(0)
            self.store.write(artifact, f)
        new_latest = attrs.Checkpoint(artifact=artifact, step=step, key=self.keys.get(step, [step])[-1])
        try:
            storage.set_trial_system_attr(trial_id, attrs.CHECKPOINT, new_latest)
        except Exception:  # the trial ended meanwhile (its lease ran out), or the storage went away:
            try:  # nothing points at the upload, so it must not stay
                _remove(self.store, artifact)
            except Exception:  # noqa: BLE001 (the store is away too: the pointer's error is the one to tell)
                pass
            raise
        loss = self._losses.get(step)
        new_best = best
        if loss is not None and math.isfinite(loss) and (best is None or loss < best["value"]):
            new_best = attrs.BestCheckpoint(**new_latest, value=loss)
            storage.set_trial_system_attr(trial_id, attrs.BEST_CHECKPOINT, new_best)
        _remove_unreferenced(self.store, [latest, best], [new_latest, new_best])
        storage.set_trial_system_attr(trial_id, attrs.IN_FLIGHT, [])


def _estimate(model) -> int:
    """A checkpoint's bytes before the first is written: the trained weights and two optimizer
    states of 4 bytes each (Adam's moments; 8-bit optimizers and frozen weights need less)."""
    if model is None:
        return 0
    return sum(p.numel() * (p.element_size() + 8) for p in model.parameters() if p.requires_grad)


def restore(study, trial, artifact_store, output_dir: Path) -> Path | None:
    """For a trial that continues another (resumed after a lost lease, or promoted from a rung):
    the other's latest checkpoint unpacked into output_dir, its intermediate values up to
    there reported again, and its checkpoint pointers taken over. None when there is
    nothing to continue from."""
    number = trial.user_attrs.get(attrs.RESUME_OF, trial.user_attrs.get(attrs.PROMOTED_FROM))
    if number is None:
        return None
    (previous,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    previous = trial.storage.get_trial(compat.trial_id(previous))  # as it is now: the list may be a snapshot old
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
    inherit(trial, previous, pointer.get("key", pointer["step"]))
    trial.storage.set_trial_system_attr(compat.trial_id(trial), attrs.CHECKPOINT, pointer)
    best = previous.system_attrs.get(attrs.BEST_CHECKPOINT)
    if best is not None:
        trial.storage.set_trial_system_attr(compat.trial_id(trial), attrs.BEST_CHECKPOINT, best)
    return folder


def inherit(trial, previous, key: int) -> None:
    """The continued trial's intermediate values up to its checkpoint's key, reported again on
    the trial that continues it: its curve is the whole run's, and the pruners judge it so."""
    for k, value in sorted(previous.intermediate_values.items()):
        if k <= key:
            trial.report(value, k)


def finish(trial, artifact_store, keep_latest: bool = False, keep_best: bool = False) -> None:
    """Removes the checkpoints of a trial that has ended, but the ones it keeps: a paused
    trial keeps both (a promotion continues from its latest), a complete one its best."""
    pointers = trial.storage.get_trial_system_attrs(compat.trial_id(trial))
    latest, best = pointers.get(attrs.CHECKPOINT), pointers.get(attrs.BEST_CHECKPOINT)
    _remove_unreferenced(artifact_store, [latest, best],
                         [latest if keep_latest else None, best if keep_best else None])


def keep_top(study, trial, artifact_store, k: int) -> None:
    """After `trial` completed: only the k best complete trials keep their best checkpoint, so
    the one it pushed out of the top k (or itself, if it is not in it) lets go of its own."""
    from optuna.trial import TrialState

    me = trial.storage.get_trial(compat.trial_id(trial))  # as it is now: the list may be a snapshot old
    others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number != me.number]
    complete = _ranked(others + [me])
    ranks = [t.number for t in complete]
    if len(complete) <= k:
        return
    out = complete[k] if ranks.index(trial.number) < k else complete[ranks.index(trial.number)]
    pointer = out.system_attrs.get(attrs.BEST_CHECKPOINT)
    if pointer:
        _remove(artifact_store, pointer["artifact"])


def _ranked(complete) -> list:
    """Complete trials best first (ties: the earlier first)."""
    return sorted(complete, key=lambda t: (t.value, t.number))


def release_unkept(study, artifact_store, k: int) -> None:
    """The study is over: every checkpoint its trials point at or had in flight goes but the
    best checkpoints of its k best complete trials (what a paused trial that will not be
    promoted, a trial failed past max_resumes, one pushed out of the top k by a completion
    racing another's, or a worker killed in the middle of a save left behind).
    Pointers shared along a lineage are kept if any keeper holds them."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    best = _ranked(t for t in trials if t.state == TrialState.COMPLETE)[:k]
    kept = {t.system_attrs[attrs.BEST_CHECKPOINT]["artifact"] for t in best if t.system_attrs.get(attrs.BEST_CHECKPOINT)}
    pointed = {p["artifact"] for t in trials if t.state.is_finished()
               for p in (t.system_attrs.get(attrs.CHECKPOINT), t.system_attrs.get(attrs.BEST_CHECKPOINT)) if p}
    pointed |= {a for t in trials if t.state.is_finished() for a in t.system_attrs.get(attrs.IN_FLIGHT, [])}
    for artifact in pointed - kept:
        _remove(artifact_store, artifact)


def discard(trial, artifact_store) -> None:
    """Removes every checkpoint of a trial that has ended (its curves stay)."""
    finish(trial, artifact_store)


def _remove_unreferenced(store, old: list, kept: list) -> None:
    keep = {p["artifact"] for p in kept if p}
    for artifact in {p["artifact"] for p in old if p} - keep:
        _remove(store, artifact)


def _remove(store, artifact: str) -> None:
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        store.remove(artifact)
    except ArtifactNotFound:  # removed already (a resumed trial shares its first pointer)
        pass
