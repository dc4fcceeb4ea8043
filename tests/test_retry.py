"""002's adjustment after a divergence: once, at half the learning rate, inside the budget,
queued under the claim lock by whoever claims next (search/continuations.py)."""

from __future__ import annotations

import dataclasses

import optuna
from optuna.trial import TrialState

from search import attrs
from search.spec import StudySpec
from search.study import space_of
from spaces.space import suggest
from search import continuations

SPEC = StudySpec(model="/m", dataset="/d", method="lora", n_examples=100, n_params=int(1e8), n_trials=3)


def _diverged(study, spec, trial=None):
    """A trial that diverged, told as the worker tells it; whether it was marked for a retry."""
    trial = trial or study.ask()
    params = suggest(trial, space_of(spec))
    marked = continuations.mark_retry(trial, params, spec)
    study.tell(trial, state=TrialState.PRUNED)
    return trial, params, marked


def retry_at_half_lr(study, spec) -> bool:
    """The next claim's sweep queued a retry."""
    return any("half the learning rate" in said for said in continuations.queue(study, spec))


def test_retry_is_queued_once_at_half_the_learning_rate():
    study = optuna.create_study()
    trial, params, marked = _diverged(study, SPEC)
    assert marked and retry_at_half_lr(study, SPEC)
    assert not retry_at_half_lr(study, SPEC), "queued once, whoever sweeps again"
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    lr = space_of(SPEC)["learning_rate"]
    queued = retry.system_attrs["fixed_params"]  # a waiting trial's params, as Optuna keeps them
    assert queued == {**params, "learning_rate": lr.nearest(params["learning_rate"] / 2)}
    assert retry.user_attrs[attrs.RETRY_OF] == trial.number
    again, _, marked = _diverged(study, SPEC, study.ask())  # the retry itself diverges: no retry of the retry
    assert again.number == retry.number and not marked and not retry_at_half_lr(study, SPEC)


def test_no_retry_when_off_fixed_or_out_of_budget():
    off = dataclasses.replace(SPEC, retry_diverged=False)
    fixed = dataclasses.replace(SPEC, space_overrides={"learning_rate": 1e-4})
    for spec in (off, fixed):
        study = optuna.create_study()
        assert not _diverged(study, spec)[2] and not retry_at_half_lr(study, spec)
    full = dataclasses.replace(SPEC, n_trials=1)
    study = optuna.create_study()
    assert _diverged(study, full)[2] and not retry_at_half_lr(study, full), "marked, but the budget is spent"


def test_two_divergences_at_once_retry_within_the_budget():
    """Two trials diverge together with room for one more configuration: the sweep under the
    claim lock queues one retry, never exceeding n_trials."""
    spec = dataclasses.replace(SPEC, n_trials=3, queue_starting_configs=False)
    study = optuna.create_study()
    first, second = study.ask(), study.ask()
    for trial in (first, second):
        assert _diverged(study, spec, trial)[2]
    said = continuations.queue(study, spec)
    assert len(said) == 1 and len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert continuations.queue(study, spec) == []
