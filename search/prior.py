"""The prior over a study's space as a distribution: drawn from, and its density at a configuration.

A numeric hyperparameter is a normal on its axis (log for a log range) around its centre,
truncated to the range, as wide as its confidence says (confidence 1: 5% of the range, 0: 55%);
a set of choices gives its centre `confidence` more probability than the others. The learning
rate's centre moves with each configuration's batch (spaces/priors.py).
"""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist
from typing import Any

import numpy as np

from spaces.param import Param


def axis(param: Param, value: float) -> float:
    return math.log(value) if param.log else float(value)


def unaxis(param: Param, x: float) -> float:
    """Back from the axis, inside the range (exp(log(high)) may round above high)."""
    return min(max(math.exp(x) if param.log else x, param.low), param.high)


def bounds(param: Param) -> tuple[float, float]:
    return axis(param, param.low), axis(param, param.high)


def sigma(param: Param) -> float:
    low, high = bounds(param)
    return (high - low) * (0.05 + 0.5 * (1 - param.confidence))


def choice_probabilities(param: Param, choices) -> np.ndarray:
    k = len(choices)
    p = np.full(k, (1 - param.confidence) / k)
    if param.centre in choices:
        p[list(choices).index(param.centre)] += param.confidence
    return p / p.sum()


def truncated_normal(rng: np.random.Generator, mean: float, std: float, low: float, high: float) -> float:
    """A draw of N(mean, std) restricted to [low, high], by inverting its distribution function."""
    d = NormalDist(mean, std)
    a, b = d.cdf(low), d.cdf(high)
    if b - a < 1e-12:  # the whole mass beyond one end
        return low if mean < low else high
    return min(max(d.inv_cdf(min(max(rng.uniform(a, b), 1e-300), 1 - 1e-16)), low), high)


def searched(space: dict[str, Param]) -> dict[str, Param]:
    """The hyperparameters with more than one value."""
    return {n: p for n, p in space.items() if p.choices is None or len(p.choices) > 1}


class Prior:
    """The prior of a space (a dict of Params); `centred_on(config)` is the same prior moved to a
    configuration (PriorBand's incumbent distribution)."""

    def __init__(self, space: dict[str, Param]):
        self.space = space
        batch = space.get("batch_size")
        self._batch = batch.centre if batch is not None else None

    def _centre(self, param: Param, config: dict) -> Any:
        return param.centre_for(config.get("batch_size", self._batch))

    def mode(self) -> dict[str, Any]:
        """Each hyperparameter at its centre (the learning rate at the centre's batch)."""
        config: dict[str, Any] = {}
        for name, p in self.space.items():  # the batch first: the learning rate's centre follows it
            config[name] = self._centre(p, config)
        return config

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for name, p in self.space.items():
            if p.choices is not None:
                config[name] = p.choices[rng.choice(len(p.choices), p=choice_probabilities(p, p.choices))]
            else:
                low, high = bounds(p)
                x = truncated_normal(rng, axis(p, self._centre(p, config)), sigma(p), low, high)
                config[name] = unaxis(p, x)
        return config

    def log_pdf(self, config: dict[str, Any]) -> float:
        """The log density at a configuration, on each hyperparameter's axis."""
        total = 0.0
        for name, p in searched(self.space).items():
            if p.choices is not None:
                total += math.log(choice_probabilities(p, p.choices)[list(p.choices).index(config[name])])
                continue
            low, high = bounds(p)
            d = NormalDist(axis(p, self._centre(p, config)), sigma(p))
            mass = max(d.cdf(high) - d.cdf(low), 1e-300)
            x = axis(p, config[name])
            total += -0.5 * ((x - d.mean) / d.stdev) ** 2 - math.log(d.stdev * math.sqrt(2 * math.pi) * mass)
        return total

    def centred_on(self, config: dict[str, Any]) -> Prior:
        batch = config.get("batch_size", self._batch)
        return Prior({n: replace(p, centre=config[n], centre_batch=batch if p.batch_exponent else p.centre_batch)
                      for n, p in self.space.items()})


def uniform(space: dict[str, Param], rng: np.random.Generator) -> dict[str, Any]:
    """A draw uniform over the space (on each range's axis)."""
    out = {}
    for name, p in space.items():
        if p.choices is not None:
            out[name] = p.choices[rng.integers(len(p.choices))]
        else:
            out[name] = unaxis(p, rng.uniform(*bounds(p)))
    return out


def mutate(space: dict[str, Param], config: dict[str, Any], rng: np.random.Generator, rate: float = 0.5,
           std: float = 0.25) -> dict[str, Any]:
    """PriorBand's neighbourhood of a configuration (NePS `mutate_config`): each hyperparameter
    redrawn with probability `rate`, a number from a normal of `std` times its range around its
    value, a choice among the others. A learning rate whose batch changed and that is kept moves
    with the batch as the prior's centre does."""
    out = dict(config)
    for name, p in searched(space).items():
        if rng.uniform() >= rate:
            continue
        if p.choices is not None:
            others = [c for c in p.choices if c != config[name]]
            out[name] = others[rng.integers(len(others))]
        else:
            low, high = bounds(p)
            out[name] = unaxis(p, truncated_normal(rng, axis(p, config[name]), std * (high - low), low, high))
    lr = space.get("learning_rate")
    if (lr is not None and lr.batch_exponent and out["learning_rate"] == config["learning_rate"]
            and out.get("batch_size") != config.get("batch_size")):
        out["learning_rate"] = lr.nearest(config["learning_rate"]
                                          * (out["batch_size"] / config["batch_size"]) ** lr.batch_exponent)
    return out
