"""A full scratch disk is the trial's error, not a storage outage (storage/outage.py,
workers/disk.py): the trial fails saying so, the worker stops after repeated failures,
nothing is left RUNNING, and the storage on its healthy disk keeps everything."""

from __future__ import annotations

import os
import subprocess

import optuna
import pytest
import torch
from conftest import IN_CI, cli_env, tunefleet

from search import attrs
from storage import open_storage
from storage.outage import unreachable
from workers import disk


def _raised(action):
    try:
        action()
    except Exception as e:  # noqa: BLE001
        return e
    raise AssertionError("no error")


def test_a_local_write_error_is_no_outage_and_says_so():
    def write_full():
        with open("/dev/full", "wb") as f:
            f.write(b"x")
    full = _raised(write_full)
    assert not unreachable(full)
    assert disk.explain(full, "/scratch").startswith("no space left on device writing /scratch (")  # write() names no file
    torch_full = _raised(lambda: torch.save(torch.zeros(10_000), "/dev/full"))  # "unexpected pos ..."
    assert not unreachable(torch_full)
    assert "writing a checkpoint in /scratch failed" in disk.explain(torch_full, "/scratch")
    assert disk.explain(ValueError("bad"), "/scratch") is None
    # safetensors' own error, as it fails a checkpoint on a full disk
    said = disk.explain(Exception("Error while serializing: I/O error: No space left on device (os error 28)"), "/s")
    assert said.startswith("no space left on device writing /s (") and said.endswith("(os error 28)")


def test_the_journals_own_io_error_is_an_outage(tmp_path):
    from optuna.storages.journal import JournalFileBackend

    (tmp_path / "dir").mkdir()
    journal_error = _raised(lambda: list(JournalFileBackend(str(tmp_path / "dir")).read_logs(0)))
    assert isinstance(journal_error, OSError) and unreachable(journal_error)


def _small_filesystem(path, size: str):
    """A real tmpfs of `size` at path (root, or a user namespace where allowed)."""
    path.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                            capture_output=True).returncode == 0:
        return lambda: subprocess.run(["umount", str(path)], check=True)
    (pytest.fail if IN_CI else pytest.skip)("cannot mount a small filesystem here (not root)")


def test_a_worker_on_a_full_scratch_disk_fails_its_trials_and_stops(tiny, tmp_path):
    model, dataset = tiny
    scratch = tmp_path / "scratch"
    unmount = _small_filesystem(scratch, "256k")
    try:
        url = f"journal:{tmp_path / 'journal.log'}"  # on the healthy disk
        assert tunefleet("study", "create", "s", "--model", model, "--dataset", dataset, "--method", "full",
                         "--n-trials", 6, "--pruner", "none", "--max-steps", 8, "--eval-steps", 4,
                         "--storage", url, cwd=tmp_path).returncode == 0
        result = tunefleet("worker", "s", "--threads", 1, "--storage", url, cwd=tmp_path,
                           env=cli_env(TMPDIR=str(scratch)), timeout=600)
    finally:
        unmount()
    assert result.returncode == 1, result.stderr
    assert "storage" not in result.stderr.replace("--storage", ""), result.stderr  # no outage was seen
    assert "3 trials failed in a row; stopping" in result.stderr, result.stderr
    trials = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials[:3]] == [optuna.trial.TrialState.FAIL] * 3
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    for t in trials[:3]:
        assert t.user_attrs[attrs.ERROR].startswith("no space left on device"), result.stderr
        assert str(scratch) in t.user_attrs[attrs.ERROR]
