"""PriorBand's sampling inside tunefleet: its shares as the formula says, the evidence it waits
for, the incumbent's neighbourhood, recovery from a bad prior, several workers."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from search import asha
from search.prior import Prior, mutate, uniform
from search.priorband import PriorBandSampler, evidence, prior_fit, shares
from search.spec import StudySpec
from spaces.param import Param

SPACE = {"x": Param("x", 1e-4, 1.0, log=True, centre=1e-2, confidence=0.5),
         "y": Param("y", 0.0, 1.0, centre=0.5, confidence=0.5),
         "c": Param("c", choices=("a", "b", "c"), centre="a", confidence=0.5)}


def test_the_uniform_share_is_one_over_one_plus_eta_to_the_rung():
    assert [round(shares(3, r, None)["uniform"], 3) for r in range(4)] == [0.5, 0.25, 0.1, 0.036]
    assert shares(3, 1, None) == {"uniform": 0.25, "prior": 0.75, "incumbent": 0.0}
    s = shares(3, 2, 0.25)
    assert s["prior"] == pytest.approx(0.9 * 0.25) and s["incumbent"] == pytest.approx(0.9 * 0.75)


def test_the_prior_draws_around_its_centre_and_its_density_integrates_to_one():
    rng = np.random.default_rng(0)
    prior = Prior({"y": SPACE["y"]})
    ys = [prior.sample(rng)["y"] for _ in range(4000)]
    assert abs(np.mean(ys) - 0.5) < 0.02 and 0 <= min(ys) and max(ys) <= 1
    grid = np.linspace(0, 1, 2001)
    assert np.trapezoid([math.exp(prior.log_pdf({"y": y})) for y in grid], grid) == pytest.approx(1, abs=1e-3)
    moved = prior.centred_on({"y": 0.9})
    assert moved.log_pdf({"y": 0.9}) > prior.log_pdf({"y": 0.9})


def test_the_learning_rate_moves_with_the_batch_in_the_prior_and_the_neighbourhood():
    batch = Param("batch_size", choices=(8, 16, 32), centre=16)
    lr = Param("learning_rate", 1e-5, 1e-2, True, None, 1e-3, 0.5, 0.5, 16)
    space = {"batch_size": batch, "learning_rate": lr}
    prior = Prior(space)
    assert prior.mode() == {"batch_size": 16, "learning_rate": 1e-3}
    moved = prior.centred_on({"batch_size": 16, "learning_rate": 2e-3})
    # At batch 32 the moved prior's learning rate peaks at 2e-3 x sqrt 2.
    at_32 = [moved.log_pdf({"batch_size": 32, "learning_rate": 2e-3 * f}) for f in (1.2, 2 ** 0.5, 1.7)]
    assert at_32[1] > max(at_32[0], at_32[2])
    rng = np.random.default_rng(1)
    for _ in range(200):
        m = mutate(space, {"batch_size": 16, "learning_rate": 1e-3}, rng)
        if m["batch_size"] != 16 and m["learning_rate"] == pytest.approx(1e-3 * (m["batch_size"] / 16) ** 0.5):
            break
    else:
        pytest.fail("a kept learning rate never moved with a mutated batch")


def test_mutation_changes_about_half_the_hyperparameters_and_every_changed_choice():
    rng = np.random.default_rng(2)
    base = {"x": 1e-2, "y": 0.5, "c": "a"}
    changed = np.array([[m[k] != base[k] for k in base] for m in (mutate(SPACE, base, rng) for _ in range(2000))])
    assert np.allclose(changed.mean(axis=0), 0.5, atol=0.04)
    assert all(uniform(SPACE, rng)["c"] in ("a", "b", "c") for _ in range(10))


def _spec(**kw):
    return StudySpec(model="m", dataset="d", method="lora", n_examples=1000, epochs=1.0, n_trials=200,
                     min_fraction=1 / 9, **kw)


def _finish(study, params, curve: dict[int, float], paused: bool):
    """A finished configuration with its rung values: paused (PRUNED) below the end, else COMPLETE."""
    t = optuna.trial.create_trial(params=params, distributions={k: optuna.distributions.FloatDistribution(0, 1)
                                                                for k in params},
                                  intermediate_values=curve, value=None if paused else min(curve.values()),
                                  state=optuna.trial.TrialState.PRUNED if paused else optuna.trial.TrialState.COMPLETE)
    study.add_trial(t)


def test_the_incumbent_waits_for_a_full_run_a_bracket_of_spend_and_eta_results_at_a_rung():
    spec = _spec()
    keys = [100, 300, 900]  # 1/9, 1/3 and the whole run of 900 examples
    from search import progress
    assert progress.rung_keys(spec) == keys
    study = optuna.create_study()
    _finish(study, {"y": 0.5}, {100: 3.0, 300: 2.0, 900: 1.0}, paused=False)
    assert evidence(study.get_trials(), spec) is None, "one full run: not yet a bracket's worth"
    for i in range(5):
        _finish(study, {"y": 0.1 * i}, {100: 3.0 + i}, paused=True)
    # Spent 1 + 5/9 full runs; one bracket of 9, 3 and 1 configurations costs 1 + 3 x 2/9 + 2/3 = 2.33.
    assert evidence(study.get_trials(), spec) is None
    for i in range(8):
        _finish(study, {"y": 0.9 - 0.01 * i}, {100: 2.5 - 0.01 * i}, paused=True)
    ev = evidence(study.get_trials(), spec)
    assert ev is not None and ev.incumbent == {"y": 0.5}
    # The highest rung with eta results is the first (14 there): its best 14 // 3 = 4, best first.
    assert [round(c["y"], 2) for c in ev.top] == [0.83, 0.84, 0.85, 0.86]


def test_the_prior_share_grows_when_the_top_sits_at_the_prior_and_shrinks_when_at_the_incumbent():
    prior = Prior({"y": SPACE["y"]})
    from search.priorband import Evidence

    near_prior = prior_fit(prior, Evidence(incumbent={"y": 0.95}, top=[{"y": 0.5}, {"y": 0.52}]))
    near_inc = prior_fit(prior, Evidence(incumbent={"y": 0.95}, top=[{"y": 0.95}, {"y": 0.9}]))
    assert near_prior > 0.5 > near_inc


def _optimise(prior_centre: float, seed: int, n: int = 60) -> float:
    """A synthetic search: loss (log10 x + 1)^2 + (y - 0.8)^2 at the full rung, higher at lower rungs."""
    space = {"x": Param("x", 1e-4, 1.0, log=True, centre=prior_centre, confidence=0.5),
             "y": Param("y", 0.0, 1.0, centre=0.5, confidence=0.5)}
    spec = _spec(space_overrides={})
    sampler = PriorBandSampler(space, spec, seed=seed)
    study = optuna.create_study(sampler=sampler, pruner=asha.AshaPruner(spec))
    study.enqueue_trial(Prior(space).mode())
    for _ in range(n):
        trial = study.ask()
        x, y = (trial.suggest_float(k, p.low, p.high, log=p.log) for k, p in space.items())
        final = (math.log10(x) + 1) ** 2 + (y - 0.8) ** 2
        for key, extra in ((100, 0.5), (300, 0.2), (900, 0.0)):
            trial.report(final + extra, key)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, final)
    return min(t.value for t in study.trials if t.value is not None)


def test_a_bad_prior_is_recovered_from_in_seconds():
    good = [_optimise(0.1, s) for s in range(5)]
    bad = [_optimise(1.5e-4, s) for s in range(5)]  # the prior 2.8 decades off: a loss of 8 at its centre
    assert np.median(good) < 0.02, good
    assert np.median(bad) < 0.02, bad  # the uniform share and the incumbent find the optimum anyway


def test_workers_asking_at_once_get_different_configurations():
    spec = _spec()
    space = {"y": SPACE["y"], "c": SPACE["c"]}
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    workers = [optuna.load_study(study_name=study.study_name, storage=storage,
                                 sampler=PriorBandSampler(space, spec)) for _ in range(4)]
    trials = [w.ask() for w in workers]
    ys = [t.suggest_float("y", 0, 1) for t in trials]
    assert len(set(ys)) == 4
