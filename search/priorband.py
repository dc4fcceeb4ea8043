"""PriorBand's sampling policy (Mallik et al., NeurIPS 2023; NePS `optimizers/priorband.py`) for
tunefleet's asha.

A new configuration whose bracket first judges it at rung r (search/asha.py) is drawn
uniformly over the space with probability 1/(1+eta^r), and otherwise from the prior. Once
the evidence suffices (a configuration ran in full, one successive-halving bracket's worth of
runs has been trained, and some rung holds eta results), the prior's share is split between
the prior and the incumbent's neighbourhood by how well each explains the top 1/eta of the
highest rung holding eta results: their rank-weighted densities under the prior and under
the prior moved onto the incumbent (the best configuration so far). Draws are random, so
workers asking at once get different configurations (no constant liar needed).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna
from optuna.trial import TrialState

from search import asha, progress
from search.prior import Prior, mutate, uniform
from spaces.param import Param


def shares(eta: int, rung: int, prior_fit: float | None) -> dict[str, float]:
    """{policy: probability} of a configuration first judged at `rung`; prior_fit is the
    prior's share of the top configurations' weighted density (None: not enough evidence)."""
    random = 1 / (1 + eta ** rung)
    if prior_fit is None:
        return {"uniform": random, "prior": 1 - random, "incumbent": 0.0}
    return {"uniform": random, "prior": (1 - random) * prior_fit, "incumbent": (1 - random) * (1 - prior_fit)}


@dataclasses.dataclass
class Evidence:
    """What the finished configurations say, as PriorBand reads it."""

    incumbent: dict | None
    top: list[dict]  # the top 1/eta of the highest rung with eta results, best first


def evidence(trials, spec) -> Evidence | None:
    """The incumbent and the top configurations, or None while PriorBand would not use them."""
    fractions, keys = progress.rung_fractions(spec), progress.rung_keys(spec)
    values: dict[int, dict[int, float]] = {}
    params: dict[int, dict] = {}
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            c = asha.lineage(t)
            values.setdefault(c, {}).update({k: v for k, v in t.intermediate_values.items() if k in keys})
            params[c] = t.params
    if not any(keys[-1] in v for v in values.values()):
        return None
    # One bracket of successive halving, runs continued: n_k configurations train from rung k-1 to k.
    n = len(keys)
    bracket = sum(spec.eta ** (n - 1 - k) * (fractions[k] - (fractions[k - 1] if k else 0)) for k in range(n))
    spent = sum(max(fractions[keys.index(k)] for k in v) for v in values.values() if v)
    at = {k: {c: v[k] for c, v in values.items() if k in v} for k in keys}
    full = [k for k in keys if len(at[k]) >= spec.eta]
    if spent < bracket - 1e-9 or not full:
        return None
    rung = at[full[-1]]
    top = sorted(rung, key=lambda c: (rung[c], c))[: len(rung) // spec.eta]
    best = min(values, key=lambda c: (min(values[c].values()), c) if values[c] else (math.inf, c))
    return Evidence(incumbent=params[best], top=[params[c] for c in top])


def prior_fit(prior: Prior, ev: Evidence) -> float:
    """The prior's share of S_prior + S_incumbent, each the rank-weighted (K..1) sum of the
    top configurations' densities."""
    incumbent = prior.centred_on(ev.incumbent)
    k = len(ev.top)
    log_w = [math.log(k - i) for i in range(k)]
    s_prior = np.logaddexp.reduce([w + prior.log_pdf(c) for w, c in zip(log_w, ev.top)])
    s_inc = np.logaddexp.reduce([w + incumbent.log_pdf(c) for w, c in zip(log_w, ev.top)])
    return float(1 / (1 + math.exp(min(s_inc - s_prior, 700))))


def _inside(distribution, value) -> bool:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    return distribution.low <= value <= distribution.high


class PriorBandSampler(optuna.samplers.BaseSampler):
    """Draws each new configuration's whole params at once, by PriorBand's shares (module
    docstring). Enqueued trials (the prior's mode, promotions, retries) keep their params."""

    def __init__(self, space: dict[str, Param], spec, seed: int | None = None):
        self._space, self._prior = space, Prior(space)
        self._spec = spec if spec.pruner == "asha" else dataclasses.replace(spec, pruner="asha")
        self._rng = np.random.default_rng(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._drawn: dict[int, dict] = {}

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def before_trial(self, study, trial) -> None:
        if "fixed_params" in trial.system_attrs:
            return
        trials = study.get_trials(deepcopy=False)
        rung = asha.brackets(trials, self._spec).get(trial.number, 0)
        ev = evidence(trials, self._spec)
        share = shares(self._spec.eta, rung, None if ev is None else prior_fit(self._prior, ev))
        policy = self._rng.choice(list(share), p=list(share.values()))
        if policy == "uniform":
            config = uniform(self._space, self._rng)
        elif policy == "prior":
            config = self._prior.sample(self._rng)
        else:
            config = mutate(self._space, ev.incumbent, self._rng)
        self._drawn[trial.number] = config

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self._drawn.get(trial.number, {}).get(param_name)
        if value is None or not _inside(param_distribution, value):  # a param outside the space
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        return value

    def after_trial(self, study, trial, state, values) -> None:
        self._drawn.pop(trial.number, None)
