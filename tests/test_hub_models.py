"""A model named by hub id resolves from the local Hugging Face cache, offline; the study
stores the id as the user named it, and a worker resolves it in its own cache."""

from __future__ import annotations

import json
import shutil

import optuna
from optuna.trial import TrialState
from test_bad_input import assert_one_line_error

from conftest import cli_env, tunefleet
from search import attrs
from storage import open_storage

COMMIT, TAGGED = "0123456789abcdef0123456789abcdef01234567", "89abcdef0123456789abcdef0123456789abcdef"


def fake_cache(tiny, root):
    """The cache layout huggingface_hub writes: refs/<name> holds a commit (no newline),
    snapshots/<commit>/ the files (plain files work as well as symlinks to blobs/)."""
    repo = root / "hub" / "models--tiny-org--tiny-llama"
    shutil.copytree(tiny[0], repo / "snapshots" / COMMIT)
    shutil.copytree(tiny[0], repo / "snapshots" / TAGGED)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "v1").write_text(TAGGED)  # a tag's ref, as snapshot_download(revision="v1") caches it
    return cli_env(HF_HUB_CACHE=str(root / "hub"))


def test_a_cached_hub_id_trains_and_is_stored_as_named(tiny, tmp_path):
    env = fake_cache(tiny, tmp_path)
    url = f"journal:{tmp_path / 'j.log'}"
    made = tunefleet("study", "create", "hub", "--model", "tiny-org/tiny-llama", "--revision", "v1",
                     "--dataset", tiny[1], "--method", "lora", "--n-trials", 1, "--max-steps", 4, "--seq-len", 32,
                     "--pruner", "none", "--storage", url, env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    study = optuna.load_study(study_name="hub", storage=open_storage(url))
    spec = study.user_attrs[attrs.SPEC]
    assert (spec["model"], spec["revision"]) == ("tiny-org/tiny-llama", "v1"), "the id, never a cache path"
    assert spec["n_params"] > 0, "counted from the cached snapshot's safetensors headers"

    # The tag's snapshot is what the worker trains: remove main's and it still runs.
    shutil.rmtree(tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT)
    done = tunefleet("worker", "hub", "--storage", url, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def test_an_uncached_hub_id_names_the_download_command(tiny, tmp_path):
    env = fake_cache(tiny, tmp_path)
    for extra, expected in (([], "hf download tiny-org/absent"),
                            (["--revision", "v9"], "hf download tiny-org/absent --revision v9")):
        result = tunefleet("study", "create", "s", "--model", "tiny-org/absent", *extra, "--dataset", tiny[1],
                           "--method", "lora", "--storage", f"journal:{tmp_path / 'j.log'}", env=env, cwd=tmp_path)
        assert_one_line_error(result, "not in the Hugging Face cache", str(tmp_path / "hub"), expected)
    suggest = tunefleet("suggest", "--model", "tiny-org/tiny-llama", "--method", "lora", "--dataset", tiny[1],
                        "--gpu-memory", 24, "--format", "json", env=env, cwd=tmp_path)
    assert suggest.returncode == 0, suggest.stderr
    assert json.loads(suggest.stdout)["training_arguments"]["learning_rate"] > 0
    assert not (tmp_path / "j.log").exists() or "tiny-org/absent" not in (tmp_path / "j.log").read_text()
