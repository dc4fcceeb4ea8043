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
