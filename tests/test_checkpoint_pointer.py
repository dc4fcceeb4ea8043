"""A checkpoint uploaded for a trial that ended meanwhile (its lease ran out) is removed
again: nothing points at it, so nothing would ever remove it later."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from workers.checkpoint import CheckpointCallback


def test_an_upload_whose_pointer_write_fails_is_removed(tmp_path):
    store_dir, output = tmp_path / "store", tmp_path / "trial"
    store_dir.mkdir()
    (output / "checkpoint-3").mkdir(parents=True)
    (output / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"weights")
    study = optuna.create_study()
    trial = study.ask()
    callback = CheckpointCallback(trial, FileSystemArtifactStore(store_dir), {3: [3]})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # collected by another process meanwhile
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        callback.on_save(SimpleNamespace(output_dir=str(output)), SimpleNamespace(global_step=3), None)
    assert list(store_dir.iterdir()) == []


class _Killed(BaseException):
    """The worker dies here: nothing of the save after this point runs (no except catches it)."""


class _DiesAtWrite:
    """Delegates to a storage or an artifact store, dying before the k-th write of the two together."""

    def __init__(self, inner, writes: list, k: int):
        self.inner, self.writes, self.k = inner, writes, k

    def __getattr__(self, name):
        method = getattr(self.inner, name)
        if not name.startswith(("set_", "write", "remove")):
            return method

        def write(*args, **kwargs):
            if len(self.writes) == self.k:
                raise _Killed
            self.writes.append(name)
            return method(*args, **kwargs)
        return write


SAVE_WRITES = 6  # in-flight ids, upload, latest pointer, best pointer, the replaced checkpoint's removal, in-flight done


@pytest.mark.parametrize("killed_at", range(SAVE_WRITES + 1))
def test_a_worker_killed_anywhere_in_a_save_leaves_nothing_once_the_study_ends(tmp_path, killed_at):
    from workers.checkpoint import release_unkept

    store_dir, output = tmp_path / "store", tmp_path / "trial"
    store_dir.mkdir()
    for step in (10, 20):
        (output / f"checkpoint-{step}").mkdir(parents=True)
        (output / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"weights %d" % step)
    study = optuna.create_study()
    trial = study.ask()
    store = FileSystemArtifactStore(store_dir)
    callback = CheckpointCallback(trial, store, {10: [10], 20: [20]})
    args = SimpleNamespace(output_dir=str(output))
    for step, loss in ((10, 2.0), (20, 1.5)):
        callback.on_evaluate(args, SimpleNamespace(global_step=step), None, metrics={"eval_loss": loss})
    callback.on_save(args, SimpleNamespace(global_step=10), None)  # the first checkpoint, whole

    writes: list = []
    trial.storage = _DiesAtWrite(trial.storage, writes, killed_at)
    callback.store = _DiesAtWrite(store, writes, killed_at)
    if killed_at < SAVE_WRITES:
        with pytest.raises(_Killed):
            callback.on_save(args, SimpleNamespace(global_step=20), None)
    else:
        callback.on_save(args, SimpleNamespace(global_step=20), None)
    assert len(writes) == killed_at

    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # its lease ran out; the study ends with no keeper
    release_unkept(study, store, 1)
    assert list(store_dir.iterdir()) == []
