"""Bad input: a one-line error, a non-zero exit, no traceback, nothing stored lost."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import free_port, tunefleet


def assert_one_line_error(result, *expected: str):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for text in expected:
        assert text in lines[0], (text, lines[0])


def create(tiny, tmp_path, *extra, model=None, dataset=None, method="lora"):
    return tunefleet("study", "create", "s", "--model", model or tiny[0], "--dataset", dataset or tiny[1],
                     "--method", method, *extra, cwd=tmp_path)


def test_missing_model_dir(tiny, tmp_path):
    assert_one_line_error(create(tiny, tmp_path, model=tmp_path / "nope"), "no such directory")


def test_model_dir_without_tokenizer(tiny, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(Path(tiny[0]) / "config.json", model)
    assert_one_line_error(create(tiny, tmp_path, model=model), "no tokenizer")


def test_malformed_jsonl_names_the_line(tiny, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": "broken\n')
    assert_one_line_error(create(tiny, tmp_path, dataset=data), "line 3", "not valid JSON")


def test_mixed_formats_name_the_line(tiny, tmp_path):
    data = tmp_path / "mixed.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"text": "c"}\n')
    assert_one_line_error(create(tiny, tmp_path, dataset=data), "line 2")


def test_unknown_method(tiny, tmp_path):
    assert_one_line_error(create(tiny, tmp_path, method="dora"), "unknown method 'dora'")


def test_empty_dataset(tiny, tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n")
    assert_one_line_error(create(tiny, tmp_path, dataset=data), "no examples")


def test_unknown_option_is_one_line(tiny, tmp_path):
    assert_one_line_error(create(tiny, tmp_path, "--n-trails", "3"), "--n-trails")


def test_unknown_study(tmp_path):
    for command in ("status", "best", "worker"):
        assert_one_line_error(tunefleet(command, "ghost", cwd=tmp_path), "no study named 'ghost'")


def test_existing_study_needs_resume_and_keeps_its_trials(tiny, tmp_path):
    assert create(tiny, tmp_path, "--n-trials", 3).returncode == 0
    assert_one_line_error(create(tiny, tmp_path, "--n-trials", 3), "already exists", "--resume")
    resumed = create(tiny, tmp_path, "--n-trials", 5, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads(tunefleet("status", "s", "--json", cwd=tmp_path).stdout)
    assert status["n_trials"] == 5 and status["counts"]["WAITING"] == 1, "the queued seed is still there"


def test_unreachable_database_fails_fast(tmp_path):
    started = time.time()
    url = f"postgresql://tf:hunter2secret@127.0.0.1:{free_port()}/tf"
    result = tunefleet("studies", "--storage", url, cwd=tmp_path)
    assert time.time() - started < 10
    assert result.returncode == 2
    assert_one_line_error(result, "cannot open storage", "tf:***@127.0.0.1")
    assert "hunter2secret" not in result.stderr + result.stdout


def test_wrong_password_is_not_echoed(private_postgres, tmp_path):
    url = f"postgresql://tf:wrong-password-xyz@127.0.0.1:{private_postgres.port}/postgres"
    result = tunefleet("studies", "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "password authentication failed", "tf:***@")
    assert "wrong-password-xyz" not in result.stderr + result.stdout
    right = tunefleet("studies", "--storage", url.replace("wrong-password-xyz", "right-password"), cwd=tmp_path)
    assert right.returncode == 0 and "no studies" in right.stdout, right.stderr


@pytest.mark.parametrize("content, expected", [
    ("learnin_rate: {low: 1.0e-5}\n", "learnin_rate"),
    ("learning_rate: {low: 1.0e-3, high: 1.0e-4}\n", "empty range"),
    ("lora_dropout: {value: 2}\n", "lora_dropout"),
    ("learning_rate: [1, 2\n", "line"),
    ("- a list\n", "mapping"),
])
def test_bad_space_file_names_the_key(tiny, tmp_path, content, expected):
    space = tmp_path / "space.yaml"
    space.write_text(content)
    assert_one_line_error(create(tiny, tmp_path, "--space", space), expected)
    assert "no studies" in tunefleet("studies", cwd=tmp_path).stdout, "nothing was stored"


def test_space_file_narrows_the_stored_space(tiny, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {low: 1e-3, high: 2.0e-3}\nlr_scheduler_type: linear\n")
    result = create(tiny, tmp_path, "--space", space, "--json")
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)["spec"]
    assert spec["space_overrides"] == {"learning_rate": {"low": 1e-3, "high": 2e-3}, "lr_scheduler_type": "linear"}
    assert spec["sampler"] == "prior" and spec["n_params"] > 0 and spec["hidden_size"] == 64


def test_lr_from_finder_refuses_a_fixed_learning_rate(tiny, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: 1e-4\n")
    assert_one_line_error(create(tiny, tmp_path, "--space", space, "--lr-from-finder"), "fixes the learning rate")
