"""A recorded table (bench/search_replay/record.py) and the surrogate over it.

A replayed trial whose params were recorded replays that run; any other replays
the nearest recorded run (Syne Tune's default surrogate is the same, KNN with
k=1 over the whole curve: a curve taken whole keeps its detectors' evidence and
its tokens consistent, which an average of curves would not). Nearest is in the
wide space's unit coordinates (log for the learning rate, the batch and the
other numeric choices by their position, 0/1 for the schedule) under a weight
per hyperparameter, fitted on the table by leave-one-out rank correlation: the
learning rate decides the loss far more than the dropout, and an unweighted
distance would pick neighbours that differ where it matters. How well this
ranks configurations it has not seen is measured by `fidelity` (out-of-fold
Spearman of the surrogate's final loss against the recorded one), beside the
same correlation between two training seeds of one configuration (the noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.stats import spearmanr

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # what the metric fit tries per hyperparameter


@dataclass(frozen=True)
class Curve:
    """One recorded run: per optimizer step (1..steps) the train loss, gradient norm and
    cumulative training tokens; the eval loss at each recorded evaluation step."""

    id: str
    seed: int
    params: dict
    steps: int
    loss: list
    grad_norm: list
    tokens: list
    eval: dict = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def of(cls, run: dict) -> "Curve":
        return cls(run["id"], run["seed"], run["params"], run["steps"], run["loss"], run["grad_norm"],
                   run["tokens"], {int(s): v for s, v in run["eval"]}, run["seconds"])

    @property
    def ended(self) -> int:
        """The last step trained (before `steps` if a non-finite loss ended the run)."""
        return len(self.loss)

    @property
    def final(self) -> float:
        """What the run finds: its best eval loss (inf if none is finite)."""
        return min((v for v in self.eval.values() if math.isfinite(v)), default=math.inf)

    @property
    def total_tokens(self) -> int:
        return self.tokens[-1] if self.tokens else 0


def coordinates(space: dict, params: dict) -> np.ndarray:
    """params as unit coordinates of the wide space (a string choice as its index, for the
    0/1 distance)."""
    out = []
    for name, p in space.items():
        v = params[name]
        if p.choices is None:
            lo, hi, x = (math.log(p.low), math.log(p.high), math.log(v)) if p.log else (p.low, p.high, v)
            out.append((x - lo) / (hi - lo))
        elif isinstance(p.choices[0], str):
            out.append(float(p.choices.index(v)) if v in p.choices else -1.0)
        else:
            ranked = sorted(p.choices)
            out.append(np.interp(math.log(v), [math.log(c) for c in ranked], np.linspace(0, 1, len(ranked)))
                       if len(ranked) > 1 else 0.0)
    return np.asarray(out, dtype=float)


class Table:
    """A problem's recorded runs and the nearest-run surrogate over them."""

    def __init__(self, runs: list[dict], space: dict):
        self.space = space
        self.names = list(space)
        self.nominal = np.array([p.choices is not None and isinstance(p.choices[0], str) for p in space.values()])
        self.curves = [Curve.of(r) for r in runs]
        self.lookup_curves = [c for c in self.curves if c.seed == 0]
        self.x = np.stack([coordinates(space, c.params) for c in self.lookup_curves])
        self.y = np.array([c.final for c in self.lookup_curves])
        self.weights = fit_weights(self.x, self.y, self.nominal)

    def distances(self, x: np.ndarray, among: np.ndarray | None = None, weights=None) -> np.ndarray:
        among = self.x if among is None else among
        return _distances(among, x, self.nominal, self.weights if weights is None else weights)

    def lookup(self, params: dict) -> Curve:
        """The recorded run of these params, else the nearest one."""
        d = self.distances(coordinates(self.space, params))
        return self.lookup_curves[int(np.argmin(d))]

    @cached_property
    def best(self) -> Curve:
        return min(self.lookup_curves, key=lambda c: c.final)

    def fidelity(self, folds: int = 5) -> dict:
        """Out-of-fold Spearman correlation of the surrogate's final loss with the recorded one
        (the metric refitted without the fold), and the same correlation between training seeds
        0 and 1 of the repeated configurations, with their median relative difference."""
        n = len(self.y)
        order = np.random.default_rng(0).permutation(n)
        predicted = np.empty(n)
        for k in range(folds):
            held = order[k::folds]
            kept = np.setdiff1d(order, held)
            w = fit_weights(self.x[kept], self.y[kept], self.nominal)
            for i in held:
                d = _distances(self.x[kept], self.x[i], self.nominal, w)
                predicted[i] = self.y[kept][int(np.argmin(d))]
        by_id = {}
        for c in self.curves:
            by_id.setdefault(c.id, {})[c.seed] = c.final
        pairs = np.array([(s[0], s[1]) for s in by_id.values() if 0 in s and 1 in s])
        finite = np.isfinite(pairs).all(axis=1) if len(pairs) else np.array([], dtype=bool)
        rel = np.abs(pairs[finite, 0] - pairs[finite, 1]) / pairs[finite, 0] if finite.any() else np.array([])
        return {"surrogate_spearman": _spearman(predicted, self.y), "configurations": n,
                "seed_spearman": _spearman(pairs[:, 0], pairs[:, 1]) if len(pairs) > 2 else None,
                "seed_pairs": int(len(pairs)),
                "seed_median_relative_difference": float(np.median(rel)) if len(rel) else None,
                "weights": dict(zip(self.names, map(float, self.weights)))}


def _spearman(a, b) -> float:
    a, b = np.nan_to_num(np.asarray(a, float), posinf=1e9), np.nan_to_num(np.asarray(b, float), posinf=1e9)
    return float(spearmanr(a, b).statistic)


def _distances(among: np.ndarray, x: np.ndarray, nominal: np.ndarray, weights: np.ndarray) -> np.ndarray:
    diff = np.abs(among - x)
    diff[:, nominal] = (diff[:, nominal] > 0).astype(float)
    return np.sqrt((weights * diff ** 2).sum(axis=1))


def fit_weights(x: np.ndarray, y: np.ndarray, nominal: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Per-hyperparameter weights of the distance that maximise the leave-one-out Spearman
    correlation of the nearest run's final loss with each run's own (coordinate search)."""
    diff = np.abs(x[:, None, :] - x[None, :, :])
    diff[:, :, nominal] = (diff[:, :, nominal] > 0).astype(float)
    sq = diff ** 2
    n = len(y)
    yy = np.nan_to_num(y, posinf=1e9)

    def score(w):
        d = (sq * w).sum(axis=2)
        d[np.arange(n), np.arange(n)] = np.inf
        return float(spearmanr(yy[np.argmin(d, axis=1)], yy).statistic)

    w = np.ones(x.shape[1])
    best = score(w)
    for _ in range(rounds):
        improved = False
        for j in range(len(w)):
            for candidate in WEIGHTS:
                if candidate == w[j]:
                    continue
                trial = w.copy()
                trial[j] = candidate
                if trial.sum() == 0:
                    continue
                s = score(trial)
                if s > best + 1e-9:
                    best, w, improved = s, trial, True
        if not improved:
            break
    return w
