"""A recorded table (bench/search_replay/record.py) and the surrogate over it.

A replayed trial whose params were recorded replays that run. Any other replays the
mean of the k nearest recorded runs of its batch, step by step, each weighted by its
inverse squared distance (Shepard's interpolation, 1968; Syne Tune's default surrogate
is KNN over whole curves too, `predict_curves`). The weighting makes the surrogate
continuous at the recorded runs: a configuration near a recorded one replays nearly
that run (an unweighted mean of 5 replayed the docstrings table's best run, 3.80, as
4.36 from 0.01 of each range away, flattening the optimum every search is looking
for), at the same leave-one-out rank correlation (within 0.01). Runs of one batch train the
same examples at every step, so their token counts are equal and their train losses,
gradient norms and eval losses average into one consistent run, which the detectors
and the pruner read as they read a real one. A step where most of the k runs have
ended (a non-finite loss) ends the mean too.

Nearest is in the wide space's unit coordinates (log for the learning rate, the
batch and the other numeric choices by their position, 0/1 for the schedule) under
a weight per hyperparameter; weights and k are fitted on the table by leave-one-out
rank correlation of the surrogate's final loss with the recorded one (the learning
rate decides the loss far more than the dropout: an unweighted distance picks
neighbours that differ where it matters). `fidelity` measures how well this ranks
configurations it has not seen: out-of-fold Spearman, the metric and k refitted
without the fold, beside the same correlation between two training seeds of one
configuration (the noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.stats import spearmanr

SURROGATE = 3  # the version of the fit below: a table's stored fit of another version is fitted again
POWER = 2  # Shepard's inverse-distance weights, 1 / d^POWER
WEIGHTS = (0.0,) + tuple(2.0 ** e for e in range(-2, 11))  # what the metric fit tries: 0, 1/4 .. 1024
NEIGHBOURS = (1, 2, 3, 4, 5, 6, 8)  # what the fit tries for k


@dataclass(frozen=True)
class Curve:
    """One run: per optimizer step (1..steps) the train loss, gradient norm and cumulative
    training tokens; the eval loss at each recorded evaluation step."""

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
                   run["tokens"], {int(e[0]): e[1] for e in run["eval"]}, run["seconds"])

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


def shepard(distances: np.ndarray) -> np.ndarray:
    """Inverse-distance weights, normalised (a run at distance ~0 takes all the weight)."""
    w = 1.0 / np.maximum(np.asarray(distances, float), 1e-9) ** POWER
    return w / w.sum(axis=-1, keepdims=True)


def blend(curves: list[Curve], params: dict, weights=None) -> Curve:
    """The step-by-step weighted mean of runs of one batch (equal steps and tokens), ending at the
    first step where most of them have ended."""
    if len(curves) == 1:
        return curves[0]
    weights = np.full(len(curves), 1.0) if weights is None else np.asarray(weights, float)
    of = {id(c): w for c, w in zip(curves, weights)}

    def mean(pairs):
        values, w = zip(*pairs)
        return float(np.average(values, weights=w))

    loss, grad, evals = [], [], {}
    for s in range(1, curves[0].steps + 1):
        alive = [c for c in curves if c.ended >= s and math.isfinite(c.loss[s - 1])]
        if 2 * len(alive) <= len(curves):  # most have ended: a non-finite loss ends the mean
            loss.append(math.nan)
            grad.append(math.nan)
            if any(s in c.eval for c in curves):
                evals[s] = math.nan
            break
        loss.append(mean([(c.loss[s - 1], of[id(c)]) for c in alive]))
        norms = [(c.grad_norm[s - 1], of[id(c)]) for c in alive if math.isfinite(c.grad_norm[s - 1])]
        grad.append(mean(norms) if norms else math.nan)
        values = [(c.eval[s], of[id(c)]) for c in alive if s in c.eval and math.isfinite(c.eval[s])]
        if values:
            evals[s] = mean(values)
    return Curve("mean of " + ", ".join(c.id for c in curves), 0, params, curves[0].steps, loss, grad,
                 curves[0].tokens[: len(loss)], evals, float(np.mean([c.seconds for c in curves])))


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
    """A problem's recorded runs and the nearest-runs surrogate over them."""

    def __init__(self, runs: list[dict], space: dict, fitted: dict | None = None):
        """`fitted`: a fit stored with the table (`surrogate()`), used if it is of this version."""
        self.space = space
        self.names = list(space)
        self.nominal = np.array([p.choices is not None and isinstance(p.choices[0], str) for p in space.values()])
        self.curves = [Curve.of(r) for r in runs]
        self.lookup_curves = [c for c in self.curves if c.seed == 0]
        self.x = np.stack([coordinates(space, c.params) for c in self.lookup_curves])
        self.y = np.array([c.final for c in self.lookup_curves])
        self.batch = np.array([c.params["batch_size"] for c in self.lookup_curves])
        if fitted and fitted.get("version") == SURROGATE:
            self.weights, self.k = np.array([fitted["weights"][n] for n in self.names]), fitted["k"]
        else:
            self.weights, self.k = fit(self.x, self.y, self.batch, self.nominal)
        self.stored_fidelity = fitted.get("fidelity") if fitted and fitted.get("version") == SURROGATE else None

    def surrogate(self) -> dict:
        """The fit and its fidelity, to store with the table."""
        return {"version": SURROGATE, "weights": dict(zip(self.names, map(float, self.weights))), "k": self.k,
                "fidelity": self.stored_fidelity or self.fidelity()}

    def lookup(self, params: dict) -> Curve:
        """The recorded run of these params, else the mean of the k nearest of its batch."""
        x = coordinates(self.space, params)
        same = np.flatnonzero(self.batch == params["batch_size"])
        if not len(same):
            same = np.arange(len(self.batch))
        d = _distances(self.x[same], x, self.nominal, self.weights)
        exact = same[np.abs(self.x[same] - x).max(axis=1) < 1e-12]
        if len(exact):
            return self.lookup_curves[int(exact[0])]
        order = np.argsort(d, kind="stable")[: self.k]
        return blend([self.lookup_curves[i] for i in same[order]], params, shepard(d[order]))

    @cached_property
    def best(self) -> Curve:
        return min(self.lookup_curves, key=lambda c: c.final)

    def fidelity(self, folds: int = 5) -> dict:
        """Out-of-fold Spearman correlation of the surrogate's final loss with the recorded one
        (its metric and k refitted without the fold), and the same correlation between training
        seeds 0 and 1 of the repeated configurations, with their median relative difference."""
        n = len(self.y)
        order = np.random.default_rng(0).permutation(n)
        predicted = np.empty(n)
        for f in range(folds):
            held = order[f::folds]
            kept = np.setdiff1d(order, held)
            w, k = fit(self.x[kept], self.y[kept], self.batch[kept], self.nominal)
            for i in held:
                same = kept[self.batch[kept] == self.batch[i]]
                d = _distances(self.x[same], self.x[i], self.nominal, w)
                near = np.argsort(d, kind="stable")[:k]
                predicted[i] = blend([self.lookup_curves[j] for j in same[near]], self.lookup_curves[i].params,
                                     shepard(d[near])).final
        by_id: dict = {}
        for c in self.curves:
            by_id.setdefault(c.id, {})[c.seed] = c.final
        pairs = np.array([(s[0], s[1]) for s in by_id.values() if 0 in s and 1 in s])
        finite = np.isfinite(pairs).all(axis=1) if len(pairs) else np.array([], dtype=bool)
        rel = np.abs(pairs[finite, 0] - pairs[finite, 1]) / pairs[finite, 0] if finite.any() else np.array([])
        return {"surrogate_spearman": _spearman(predicted, self.y), "configurations": n, "k": self.k,
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


def fit(x: np.ndarray, y: np.ndarray, batch: np.ndarray, nominal: np.ndarray, rounds: int = 3) -> tuple[np.ndarray, int]:
    """(per-hyperparameter weights of the distance, k) that maximise the leave-one-out Spearman
    correlation of the weighted mean final loss of each run's k nearest others of its batch with its own
    (a coordinate search over WEIGHTS for each k of NEIGHBOURS). The final loss stands in for
    the whole curve: it is what the benchmark ranks."""
    diff = np.abs(x[:, None, :] - x[None, :, :])
    diff[:, :, nominal] = (diff[:, :, nominal] > 0).astype(float)
    sq = diff ** 2
    n = len(y)
    yy = np.nan_to_num(y, posinf=1e9)
    apart = np.where(batch[:, None] == batch[None, :], 0.0, np.inf)  # neighbours share the batch
    apart[np.arange(n), np.arange(n)] = np.inf  # and are others
    room = int(min(np.isfinite(apart).sum(axis=1)))  # neighbours every run has

    def score(w, k):
        d = np.sqrt((sq * w).sum(axis=2)) + apart
        nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
        weights = shepard(np.take_along_axis(d, nearest, axis=1))
        return float(spearmanr((yy[nearest] * weights).sum(axis=1), yy).statistic)

    best = (-2.0, np.ones(x.shape[1]), 1)
    for k in [k for k in NEIGHBOURS if k <= max(1, room)]:
        w = np.ones(x.shape[1])
        s = score(w, k)
        for _ in range(rounds):
            improved = False
            for j in range(len(w)):
                for candidate in WEIGHTS:
                    trial = w.copy()
                    trial[j] = candidate
                    if candidate == w[j] or not trial.any():
                        continue
                    t = score(trial, k)
                    if t > s + 1e-9:
                        s, w, improved = t, trial, True
            if not improved:
                break
        if s > best[0]:
            best = (s, w, k)
    return best[1], best[2]
