"""A user's whole path with the defaults (trials sized in epochs, asha's rungs and
promotions, token costs): study create, two worker processes, status and best, on
the real PostgreSQL and on the embedded default storage."""

from __future__ import annotations

import json

import optuna
import pytest
from conftest import kept_artifacts, start_tunefleet, tunefleet

from search import asha, attrs, budget
from search.spec import StudySpec
from search.study import STARTING_CONFIG, space_of
from storage import open_storage

N_TRIALS = 6
# These judge the train loss or gradient norm at any step, so they may end a trial
# between evaluations, or before the first one.
TRAIN_LOSS_DETECTORS = {"divergence", "gradient_explosion", "gradient_vanishing"}


def _run_study(tiny, storage_args, cwd):
    model, dataset = tiny
    created = tunefleet("study", "create", "e2e", "--model", model, "--dataset", dataset, "--method", "lora",
                        "--n-trials", N_TRIALS, "--epochs", 0.3, "--seq-len", 64,
                        *storage_args, cwd=cwd)
    assert created.returncode == 0, created.stderr
    assert "the prior's mode queued as the first trial" in created.stdout
    workers = [start_tunefleet("worker", "e2e", "--threads", 1, *storage_args, cwd=cwd) for _ in range(2)]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert all("study budget spent" in log for log in logs), logs


def _check_study(url, tiny, cwd):
    storage = open_storage(url)
    study = optuna.load_study(study_name="e2e", storage=storage)
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert budget.configurations(trials) == N_TRIALS, "the budget is exact across workers"
    assert set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}, states
    # The prior's mode was queued first and trained first.
    assert trials[0].user_attrs[attrs.SOURCE] == STARTING_CONFIG
    space = space_of(StudySpec.from_dict(study.user_attrs[attrs.SPEC]))
    assert trials[0].params == {k: p.centre for k, p in space.items()}
    spec = StudySpec.from_dict(study.user_attrs[attrs.SPEC])
    assert spec.epochs == 0.3 and spec.pruner == "asha"
    for t in trials:
        assert set(t.user_attrs[attrs.WORKER]) >= {"host", "pid", "claimed_at"}
        assert t.user_attrs[attrs.COST]["tokens"] > 0 and t.user_attrs[attrs.COST]["seconds"] > 0
        if t.state == optuna.trial.TrialState.PRUNED:
            reason = t.user_attrs[attrs.PRUNE]
            assert reason["detector"] and reason["evidence"] and 0 < reason["step"], reason
            if reason["detector"] == "rung":
                assert t.user_attrs[attrs.PAUSED]["rung"] in t.intermediate_values
        else:
            assert t.value == min(t.intermediate_values.values()), "a trial's value is its best eval loss"
    assert any(s == optuna.trial.TrialState.COMPLETE for s in states)
    assert asha.paused(trials) or any(attrs.PROMOTED_FROM in t.user_attrs for t in trials), "asha paused trials"
    assert len({t.user_attrs[attrs.WORKER]["pid"] for t in trials}) == 2, "both workers trained trials"

    best = tunefleet("best", "e2e", "--json", *(["--storage", url] if url else []), cwd=cwd)
    assert best.returncode == 0, best.stderr
    report = json.loads(best.stdout)
    space = space_of(spec)
    assert set(report["params"]) == set(space)
    for name, value in report["params"].items():
        assert space[name].contains(value), (name, value)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert report["value"] == min(t.value for t in complete)
    args = report["training_arguments"]
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == report["params"]["batch_size"]
    assert report["peft_config"]["r"] == report["params"]["lora_r"]

    status = tunefleet("status", "e2e", "--json", *(["--storage", url] if url else []), cwd=cwd)
    doc = json.loads(status.stdout)
    assert doc["counts"]["COMPLETE"] + doc["counts"]["PRUNED"] == len(trials) and doc["counts"]["RUNNING"] == 0
    assert doc["configurations"] == N_TRIALS
    assert doc["compute"]["tokens"] == sum(t.user_attrs[attrs.COST]["tokens"] for t in trials)
    text = tunefleet("status", "e2e", *(["--storage", url] if url else []), cwd=cwd)
    assert f"compute: {doc['compute']['tokens']:,} training tokens" in text.stdout
    # The search's progress: configurations by what they do, and the best loss against the tokens spent.
    progress = doc["progress"]
    assert sum(progress["configurations"].values()) == N_TRIALS and progress["configurations"]["running"] == 0
    assert progress["configurations"]["complete"] == len({asha.lineage(t) for t in complete})
    curve = progress["best_by_tokens"]
    assert curve[-1][1] == report["value"] and curve[-1][0] <= doc["compute"]["tokens"]
    assert all(a[0] <= b[0] and a[1] > b[1] for a, b in zip(curve, curve[1:])), "tokens grow, the best falls"
    assert f"best eval loss by tokens spent: " in text.stdout and "0 more may start" in text.stdout

    listed = json.loads(tunefleet("trials", "e2e", "--json", "--storage", url, cwd=cwd).stdout)
    assert [r["number"] for r in listed] == [t.number for t in trials]
    for row, t in zip(listed, trials):
        assert (row["state"], row["value"], row["params"]) == (t.state.name, t.value, t.params)
        assert row["cost"]["tokens"] == t.user_attrs[attrs.COST]["tokens"]
        assert row["ended"].startswith("paused at the rung" if attrs.PAUSED in t.user_attrs else
                                       "pruned by" if t.state.name == "PRUNED" else ("stopped early", "ran in full"))
    table = tunefleet("trials", "e2e", "--csv", "--storage", url, cwd=cwd).stdout.splitlines()
    assert len(table) == len(trials) + 1 and "params_learning_rate" in table[0] and "tokens" in table[0]

    kept = [t for t in trials if t.system_attrs.get(attrs.BEST_CHECKPOINT)]
    assert kept, "the best trial keeps its checkpoint"
    gone = tunefleet("study", "delete", "e2e", "--storage", url, cwd=cwd)
    assert gone.returncode == 0 and "study 'e2e' deleted" in gone.stdout, gone.stderr
    assert "e2e" not in optuna.get_all_study_names(open_storage(url))
    from optuna.artifacts.exceptions import ArtifactNotFound

    from storage import backend

    with pytest.raises(ArtifactNotFound):
        backend(url).artifacts(open_storage(url)).open_reader(kept[0].system_attrs[attrs.BEST_CHECKPOINT]["artifact"])
    again = tunefleet("study", "delete", "e2e", "--storage", url, cwd=cwd)
    assert again.returncode != 0 and "no study named 'e2e'" in again.stderr
    assert tunefleet("--version").stdout.startswith("tunefleet, version ")


def test_study_on_postgresql(tiny, pg_url, tmp_path):
    _run_study(tiny, ["--storage", pg_url], tmp_path)
    _check_study(pg_url, tiny, tmp_path)


def _audit_artifacts(url, directory):
    """Once the study is over, the store holds exactly the k best complete trials' best
    checkpoints, the curves and the study's plot: no paused trial's, none pushed out."""
    trials = optuna.load_study(study_name="e2e", storage=open_storage(url)).get_trials()
    assert any(attrs.PAUSED in t.user_attrs for t in trials), "a paused trial's checkpoints were there to go"
    assert {p.name for p in directory.iterdir()} == kept_artifacts(url, "e2e")


def test_study_on_embedded_default(tiny, tmp_path):
    _run_study(tiny, [], tmp_path)  # no --storage, no $TUNEFLEET_STORAGE
    _audit_artifacts(f"journal:{tmp_path / '.tunefleet' / 'journal.log'}", tmp_path / ".tunefleet" / "artifacts")
    assert (tmp_path / ".tunefleet" / "journal.log").is_file()
    _check_study(f"journal:{tmp_path / '.tunefleet' / 'journal.log'}", tiny, tmp_path)
