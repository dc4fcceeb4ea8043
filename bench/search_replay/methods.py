"""The searches the replay compares: the real benchmark's (bench/search_efficiency/methods.py),
set up by the same code, plus tunefleet under priors built as mf-prior-bench builds them.

- tunefleet, tpe-median, tpe-hyperband, random, tunefleet-lr-x30, tunefleet-lr-div30: the
  real benchmark's studies (its spaces, pruners, starting configs and detectors), with the
  search's budget as the study's own token budget (`max_tokens`), which every simulated
  worker's claim enforces; the truth learning rate is the best of the table's sweep.
- neps-priorband: NePS PriorBand asked and told as in the real benchmark
  (bench/search_replay/neps.py).
- tunefleet-prior-good / -medium / -bad: tunefleet with every hyperparameter's prior
  centre moved (confidences unchanged). good: the table's best configuration, perturbed
  by 0.01 of each range; medium: good perturbed by 0.25 of each range (PriorBand's
  paper); bad: the table's worst configuration within the plain space (mf-prior-bench's
  "bad": the worst of many samples). Ranges widen to hold a centre outside them, as the
  30x-off learning-rate priors' do.
"""

from __future__ import annotations

import math

import numpy as np

from bench.search_efficiency.methods import (LR_VARIANTS, METHODS as REAL_METHODS, NO_DETECTORS, PLAIN_LR,
                                             PLAIN_OVERRIDES, base_spec, shifted_lr_override)
from search.study import create, load, space_of

PRIORS = {"tunefleet-prior-good": 0.01, "tunefleet-prior-medium": 0.25, "tunefleet-prior-bad": None}
METHODS = {**{k: v for k, v in REAL_METHODS.items() if k != "hf-optuna"},
           "tunefleet-prior-good": "(a) with a good prior (the table's best, perturbed by 0.01)",
           "tunefleet-prior-medium": "(a) with a medium prior (good, perturbed by 0.25)",
           "tunefleet-prior-bad": "(a) with a bad prior (the table's worst in the plain space)"}
DEFAULT = "tunefleet"
BASELINE = "tpe-median"


def truth_lr(table) -> float:
    """The learning rate of the starting config's sweep with the lowest final loss."""
    sweep = [c for c in table.lookup_curves if c.id.startswith("sweep-")]
    return min(sweep, key=lambda c: c.final).params["learning_rate"]


def prior_config(table, method: str, seed: int = 0) -> dict:
    """The configuration the prior of a tunefleet-prior-* method is centred on."""
    scale = PRIORS[method]
    if scale is None:
        plain = [c for c in table.lookup_curves if c.params["learning_rate"] <= PLAIN_LR[1]]
        return dict(max(plain, key=lambda c: c.final if math.isfinite(c.final) else 1e9).params)
    return perturb(table.space, table.best.params, scale, np.random.default_rng(seed))


def perturb(space: dict, config: dict, scale: float, rng) -> dict:
    """config moved by a normal step of `scale` x each range (unit space, clipped); a choice
    redrawn uniformly with probability `scale`."""
    out = {}
    for name, p in space.items():
        v = config[name]
        if p.choices is not None:
            out[name] = p.choices[rng.integers(len(p.choices))] if rng.random() < scale else v
            continue
        lo, hi, x = (math.log(p.low), math.log(p.high), math.log(v)) if p.log else (p.low, p.high, v)
        x = float(np.clip(x + rng.normal(0, scale * (hi - lo)), lo, hi))
        out[name] = math.exp(x) if p.log else x
    return out


def centred_overrides(problem, tc, config: dict) -> dict:
    """space_overrides that centre every prior on `config`, widening a range (or adding a
    choice) that does not hold it."""
    prior = space_of(base_spec(problem, tc))
    out = {}
    for name, p in prior.items():
        v = config[name]
        if p.choices is not None:
            choices = sorted(set(p.choices) | {v}, key=lambda c: (isinstance(c, str), c))
            out[name] = {"choices": choices, "centre": v}
        else:
            out[name] = {"low": min(p.low, v), "high": max(p.high, v), "centre": v}
    return out


def study_options(method: str, problem, tc, table) -> dict:
    """The StudySpec options of a tunefleet-style method."""
    if method == "tunefleet":
        return {}
    if method in LR_VARIANTS:
        return {"space_overrides": shifted_lr_override(problem, tc, truth_lr(table) * LR_VARIANTS[method])}
    if method in PRIORS:
        return {"space_overrides": centred_overrides(problem, tc, prior_config(table, method))}
    if method in ("tpe-median", "tpe-hyperband", "random"):
        sampler, pruner = {"tpe-median": ("tpe", "median"), "tpe-hyperband": ("tpe", "hyperband"),
                           "random": ("random", "none")}[method]
        return {"sampler": sampler, "pruner": pruner, "space_overrides": PLAIN_OVERRIDES,
                "queue_starting_configs": False, "detectors": NO_DETECTORS, "retry_diverged": False}
    raise ValueError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")


def open_search(method: str, problem, tc, table, seed: int, budget: int, options: dict | None = None):
    """The search of `method` over `budget` tokens, on a fresh in-memory Optuna storage; `options`
    (StudySpec fields) change tunefleet's own methods, not the baselines."""
    import optuna

    if method == "neps-priorband":
        from bench.search_replay.neps import NepsSearch

        return NepsSearch(problem, tc, table, seed, budget)
    from bench.search_replay.fleet import TunefleetSearch

    storage = optuna.storages.InMemoryStorage()
    # Leases are in wall seconds, which a simulated fleet does not live in: none runs out here.
    spec = base_spec(problem, tc, n_trials=100_000, max_tokens=budget, lease_seconds=1e9,
                     **{**study_options(method, problem, tc, table),
                        **(options or {} if method.startswith("tunefleet") else {})})
    name = f"{problem.name}-{method}-{seed}"
    create(storage, name, spec)
    study, spec = load(storage, name, seed=seed)
    return TunefleetSearch(study, storage, spec, table)
