"""002's adjustment after a divergence: once, at half the learning rate, inside the budget."""

from __future__ import annotations

import dataclasses

import optuna
from optuna.trial import TrialState

from search import attrs
from search.spec import StudySpec
from search.study import space_of
from spaces.space import suggest
from workers.trial_outcome import retry_at_half_lr

SPEC = StudySpec(model="/m", dataset="/d", method="lora", n_examples=100, n_params=int(1e8), n_trials=3)


def _diverged(study, spec):
    trial = study.ask()
    params = suggest(trial, space_of(spec))
    study.tell(trial, state=TrialState.PRUNED)
    return trial, params


def test_retry_is_queued_once_at_half_the_learning_rate():
    study = optuna.create_study()
    trial, params = _diverged(study, SPEC)
    assert retry_at_half_lr(study, trial, params, SPEC)
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    lr = space_of(SPEC)["learning_rate"]
    queued = retry.system_attrs["fixed_params"]  # a waiting trial's params, as Optuna keeps them
    assert queued == {**params, "learning_rate": lr.nearest(params["learning_rate"] / 2)}
    assert retry.user_attrs[attrs.RETRY_OF] == trial.number
    again = study.ask()  # the retry itself diverges: no retry of the retry
    study.tell(again, state=TrialState.PRUNED)
    assert not retry_at_half_lr(study, again, queued, SPEC)


def test_no_retry_when_off_fixed_or_out_of_budget():
    off = dataclasses.replace(SPEC, retry_diverged=False)
    fixed = dataclasses.replace(SPEC, space_overrides={"learning_rate": 1e-4})
    for spec in (off, fixed):
        study = optuna.create_study()
        trial, params = _diverged(study, spec)
        assert not retry_at_half_lr(study, trial, params, spec)
    full = dataclasses.replace(SPEC, n_trials=1)
    study = optuna.create_study()
    trial, params = _diverged(study, full)
    assert not retry_at_half_lr(study, trial, params, full)
