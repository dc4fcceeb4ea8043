"""A study always comes back with a result, and a token budget ends it: through the CLI,
on the embedded storage, with real training."""

from __future__ import annotations

import json

import optuna
from conftest import tunefleet
from optuna.trial import TrialState

from search import attrs
from storage import open_storage


def _create(tiny, tmp_path, name, *options):
    model, dataset = tiny
    created = tunefleet("study", "create", name, "--model", model, "--dataset", dataset, "--method", "lora",
                        "--seq-len", 48, *options, cwd=tmp_path)
    assert created.returncode == 0, created.stderr


def _trials(tmp_path, name):
    storage = open_storage(f"journal:{tmp_path / '.tunefleet' / 'journal.log'}")
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_a_slowly_learning_model_still_yields_a_complete_trial(tiny, tmp_path):
    # A learning rate this low barely moves the loss: the plateau detector fires on every run.
    (tmp_path / "space.yaml").write_text("learning_rate: 1e-7\nbatch_size: 8\n")
    _create(tiny, tmp_path, "slow", "--n-trials", 3, "--epochs", 0.5, "--space", "space.yaml")
    worker = tunefleet("worker", "slow", "--threads", 1, cwd=tmp_path, timeout=600)
    assert worker.returncode == 0, worker.stderr
    trials = _trials(tmp_path, "slow")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, [(t.number, t.state, t.user_attrs.get(attrs.PRUNE)) for t in trials]
    # A plateau is convergence: it ends a trial as complete, never as pruned.
    assert not [t for t in trials if (t.user_attrs.get(attrs.PRUNE) or {}).get("detector") == "plateau"]
    stopped = [t for t in complete if attrs.EARLY_STOP in t.user_attrs]
    assert stopped and stopped[0].user_attrs[attrs.EARLY_STOP]["detector"] == "plateau", worker.stderr
    for t in complete:
        assert t.value == min(t.intermediate_values.values())
    best = tunefleet("best", "slow", "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["value"] == min(t.value for t in complete)


def test_a_token_budget_ends_the_study(tiny, tmp_path):
    _create(tiny, tmp_path, "tokens", "--n-trials", 50, "--epochs", 0.2, "--max-tokens", 6000, "--pruner", "none")
    worker = tunefleet("worker", "tokens", "--threads", 1, cwd=tmp_path, timeout=600)
    assert worker.returncode == 0, worker.stderr
    assert "token budget spent" in worker.stderr
    trials = sorted(_trials(tmp_path, "tokens"), key=lambda t: t.number)
    tokens = [t.user_attrs[attrs.COST]["tokens"] for t in trials]
    assert all(n > 0 for n in tokens) and len(trials) < 50
    # One worker: every trial but the last started while the budget had room, none after it was spent.
    assert sum(tokens[:-1]) < 6000 <= sum(tokens)
    status = json.loads(tunefleet("status", "tokens", "--json", cwd=tmp_path).stdout)
    assert status["compute"]["tokens"] == sum(tokens) and status["max_tokens"] == 6000
