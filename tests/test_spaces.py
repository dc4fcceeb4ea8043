"""Priors, space, spec, dataset parsing and the TrainingArguments mapping (pure Python)."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search.spec import StudySpec
from spaces import export, priors
from spaces.dataset import read_dataset
from spaces.errors import InputError
from spaces.methods import METHODS
from search.prior import Prior
from spaces.space import batch_choices, build_space, starting_configs, suggest
from storage.urls import normalise, redact, scrub


@pytest.mark.parametrize("n, tier", [(500, (8, 16)), (1_000, (16, 32)), (50_000, (32, 64)), (10**6, (64, 128))])
def test_batch_tiers(n, tier):
    assert priors.batch_tier(n) == tier
    assert min(batch_choices(n)) == tier[0] // 2 and max(batch_choices(n)) == tier[1] * 2


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [100, 5_000, 500_000])
def test_starting_configs_lie_in_the_space(method, n):
    space = build_space(method, 7e9, n)
    configs = starting_configs(method, space)
    assert configs
    for config in configs:
        assert set(config) == set(space)
        assert all(space[k].contains(v) for k, v in config.items())


@pytest.mark.parametrize("method", METHODS)
def test_the_prior_mode_is_every_centre(method):
    space = build_space(method, 7e9, 5_000)
    config = Prior(space).mode()
    assert all(space[k].contains(v) for k, v in config.items())
    assert config == {k: p.centre for k, p in space.items()}  # the learning rate's centre is at the batch centre


def test_qlora_starting_config_is_the_seed_quick_reference():
    (config,) = starting_configs("qlora", build_space("qlora", 7e9, 500))
    assert config["learning_rate"] == 1e-4 and config["batch_size"] == 16 and config["max_grad_norm"] == 0.3


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(tuple(METHODS)), n=st.integers(2, 10**6), seed=st.integers(0, 2**31),
       n_params=st.sampled_from([1e8, 7e9, 2e10, 7e10]))
def test_every_sampled_trial_lies_in_its_space(method, n, seed, n_params):
    space = build_space(method, n_params, n)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = suggest(study.ask(), space)
    assert all(space[k].contains(v) for k, v in params.items())


@given(effective=st.integers(1, 512), cap=st.integers(1, 64))
def test_micro_batch_times_accumulation_is_exactly_the_effective_batch(effective, cap):
    micro, accumulation = export.split_batch(effective, cap)
    assert micro * accumulation == effective and micro <= cap


def test_training_arguments_mapping():
    params = {"learning_rate": 2e-4, "batch_size": 32, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
              "weight_decay": 0.01, "max_grad_norm": 0.3, "lora_r": 8, "lora_alpha_ratio": 2, "lora_dropout": 0.05}
    args = export.training_arguments(params, "qlora", max_steps=50, eval_steps=5, max_micro_batch=8)
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (8, 4)
    assert args["warmup_steps"] == 5 and args["optim"] == "paged_adamw_8bit" and args["eval_strategy"] == "steps"
    assert export.peft_config(params, "qlora")["lora_alpha"] == 16
    assert export.quantization_config("qlora")["bnb_4bit_quant_type"] == "nf4"
    assert export.peft_config(params, "full") is None
    over4 = export.training_arguments(params, "qlora", max_steps=50, eval_steps=5, max_micro_batch=4, ranks=4)
    assert (over4["per_device_train_batch_size"], over4["gradient_accumulation_steps"]) == (4, 2), "32 = 4 x 2 x 4"
    with pytest.raises(ValueError, match="does not split over 3 ranks"):
        export.per_rank_batch(32, 3)


def _spec(**kw):
    return StudySpec(**{"model": "/m", "dataset": "/d.jsonl", "method": "lora", "n_examples": 100, **kw})


def test_spec_round_trips_and_defaults_eval_steps():
    spec = _spec(max_steps=50)
    assert spec.eval_steps == 5
    assert StudySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("bad, message", [
    ({"method": "dora"}, "unknown method"), ({"n_trials": 0}, "n_trials"), ({"eval_steps": 500}, "eval_steps"),
    ({"detectors": {"plateau_window": 0}}, "plateau_window"), ({"n_examples": 1}, "at least 2"),
])
def test_spec_rejects_bad_values(bad, message):
    with pytest.raises(InputError, match=message):
        _spec(**bad)


def test_spec_rejects_unknown_keys():
    with pytest.raises(InputError, match="unknown spec key 'detectors.typo'"):
        StudySpec.from_dict({**_spec().to_dict(), "detectors": {"typo": 1}})


def test_dataset_formats(tmp_path):
    rows = {"text": {"text": "hello"}, "prompt_completion": {"prompt": "q", "completion": "a"},
            "messages": {"messages": [{"role": "user", "content": "hi"}]}}
    for fmt, row in rows.items():
        path = tmp_path / f"{fmt}.jsonl"
        path.write_text(json.dumps(row) + "\n\n" + json.dumps(row) + "\n")
        assert read_dataset(path) == (fmt, [row, row])


def test_dataset_errors_name_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"messages": [{"role": "user"}]}\n')
    with pytest.raises(InputError, match="line 2"):
        read_dataset(path)


def test_storage_urls():
    assert normalise("postgresql://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    assert normalise("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalise("runs/j.log") == "journal:runs/j.log"
    assert normalise("sqlite:///x.db") == "sqlite:///x.db"
    assert redact("postgresql+psycopg2://u:s3cr@t@h:5432/db") == "postgresql+psycopg2://u:***@h:5432/db"
    assert scrub("failed for s3cret here", "postgresql://u:s3cret@h/db") == "failed for *** here"
    assert redact("postgresql://u@h/db?sslmode=require&password=s3cret&x=1") == \
        "postgresql://u@h/db?sslmode=require&password=***&x=1"
    assert redact("postgresql://u@h/db?password=s3cret") == "postgresql://u@h/db?password=***"
    assert scrub("no s3cret", "postgresql://u@h/db?password=s3cret") == "no ***"


def test_a_storage_url_is_resolved_once_into_its_kind(tmp_path, monkeypatch):
    from storage import backend

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNEFLEET_STORAGE", raising=False)
    journal = backend("runs/j.log")
    assert (journal.kind, journal.journal, journal.url) == ("journal", tmp_path / "runs/j.log",
                                                            f"journal:{tmp_path}/runs/j.log")
    assert backend(None).kind == "journal" and backend(None).journal == tmp_path / ".tunefleet/journal.log"
    pg = backend("postgres://u:pw@h/db")
    assert (pg.kind, pg.url, pg.shown) == ("postgresql", "postgresql+psycopg2://u:pw@h/db",
                                           "postgresql+psycopg2://u:***@h/db")
    proxy = backend("grpc://coordinator:50051")
    assert (proxy.kind, proxy.address, proxy.behind_coordinator) == ("coordinator", ("coordinator", 50051), True)
    assert backend("sqlite:///x.db").kind == "database" and not pg.behind_coordinator
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        backend("grpc://nohost")
    with pytest.raises(RuntimeError, match="no claim lock behind the coordinator"):
        with proxy.claim_lock(None, "s"):
            pass
    with pytest.raises(ValueError, match="pass a directory"):
        backend("sqlite:///x.db").artifacts(None)


def test_light_commands_import_no_torch():
    code = ("import sys; from click.testing import CliRunner; from search.cli import cli; "
            "r = CliRunner().invoke(cli, ['status', 'nothing', '--storage', 'journal:/tmp/tunefleet-light.log']); "
            "CliRunner().invoke(cli, ['--help']); "
            "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "False", "False"]
