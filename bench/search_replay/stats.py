"""The statistics the field reports for a search benchmark, over incumbent curves.

An incumbent curve is a search's best loss found so far against the training tokens it
had spent: a list of (tokens, loss) at each improvement. Per problem:

- normalized regret (Syne Tune's and CARP-S's): (y - best) / (worst - best), best and
  worst over every method, seed and budget point of the problem; before a search has
  found anything its regret is 1. Sampled on a grid of budget points; its mean over the
  grid is the area under the regret curve.
- mean regret per method with a bootstrap 95% interval over seeds.
- speedup over a baseline (piBO's "12.5x"): the tokens the baseline's mean best loss
  needs to reach its own final value, divided by the tokens the method's mean best loss
  needs to reach it; a method whose mean never gets there gets the baseline's tokens over
  the whole budget, an upper bound.
- average rank per budget point (seed-paired, ties averaged).
- two-sided Wilcoxon signed-rank test of final regret, seed-paired (HPOBench's tables).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata, wilcoxon

GRID = 100  # budget points: every hundredth of the budget
SHARES = (0.1, 0.25, 0.5, 1.0)


def grid(budget: float, points: int = GRID) -> np.ndarray:
    return budget * np.arange(1, points + 1) / points


def best_so_far(curve: list[tuple[float, float]], at: np.ndarray) -> np.ndarray:
    """The incumbent's loss at each budget point (nan before the first find)."""
    out, best = np.full(len(at), np.nan), math.inf
    for tokens, loss in sorted(curve):
        best = min(best, loss)
        out[at >= tokens] = best  # later finds overwrite a later stretch
    return out


def regret_table(curves: dict[str, dict[int, list]], budget: float) -> tuple[dict[str, dict[int, np.ndarray]], float, float]:
    """({method: {seed: regret on the grid}}, best, worst); curves[method][seed] is an incumbent
    curve."""
    at = grid(budget)
    values = {m: {seed: best_so_far(c, at) for seed, c in seeds.items()} for m, seeds in curves.items()}
    finite = np.concatenate([v[np.isfinite(v)] for seeds in values.values() for v in seeds.values()] or [[]])
    if not len(finite):
        return {m: {seed: np.ones(len(at)) for seed in seeds} for m, seeds in values.items()}, math.nan, math.nan
    best, worst = float(finite.min()), float(finite.max())
    span = worst - best if worst > best else 1.0
    return ({m: {seed: np.where(np.isfinite(v), np.clip((v - best) / span, 0, 1), 1.0) for seed, v in seeds.items()}
             for m, seeds in values.items()}, best, worst)


def stacked(by_seed: dict[int, np.ndarray], seeds=None) -> np.ndarray:
    """[seed, budget point] over `seeds` (default: all, in seed order)."""
    return np.stack([by_seed[s] for s in sorted(by_seed if seeds is None else seeds)])


def bootstrap_mean(x: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean over the first axis with a 95% percentile bootstrap interval."""
    x = np.asarray(x, float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n, len(x)))].mean(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def band(r: np.ndarray, n: int = 1000, seed: int = 0) -> list[list[float]]:
    """[low, high]: a 95% bootstrap interval (over seeds) of the mean at each budget point."""
    rng = np.random.default_rng(seed)
    means = r[rng.integers(0, len(r), (n, len(r)))].mean(axis=1)
    return [np.percentile(means, 2.5, axis=0).tolist(), np.percentile(means, 97.5, axis=0).tolist()]


def mean_curve(curves: list, budget: float, fill: float) -> np.ndarray:
    """Mean over seeds of the incumbent loss on the grid, `fill` before a seed's first find."""
    at = grid(budget)
    return np.stack([np.nan_to_num(best_so_far(c, at), nan=fill) for c in curves]).mean(axis=0)


def speedup(method: np.ndarray, baseline: np.ndarray, budget: float) -> tuple[float, bool]:
    """(speedup, exact) from mean curves on the grid: the budget the baseline needs to reach
    its own final mean value over the budget the method needs to reach it; (baseline's /
    whole budget, False) when the method never does: an upper bound."""
    at = grid(budget, len(baseline))
    target = baseline[-1]
    needed = at[np.argmax(baseline <= target + 1e-12)]
    reached = method <= target + 1e-12
    if not reached.any():
        return float(needed / budget), False
    return float(needed / at[np.argmax(reached)]), True


def average_ranks(regrets: dict[str, dict[int, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per budget point, each method's rank among the methods averaged over seeds (1 = best),
    seed-paired: over the seeds every method has."""
    methods = list(regrets)
    common = sorted(set.intersection(*(set(regrets[m]) for m in methods)))
    ranks = rankdata(np.stack([stacked(regrets[m], common) for m in methods]), axis=0)  # method, seed, point
    return {m: ranks[i].mean(axis=0) for i, m in enumerate(methods)}


def wilcoxon_p(a: dict[int, float], b: dict[int, float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of {seed: value} samples paired by seed (1.0 when
    they never differ)."""
    seeds = sorted(set(a) & set(b))
    x, y = np.array([a[s] for s in seeds], float), np.array([b[s] for s in seeds], float)
    if not np.any(np.abs(x - y) > 1e-12):
        return 1.0
    return float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)


def summarise(curves: dict[str, dict[int, list]], budget: float, default: str, baseline: str) -> dict:
    """Everything the report states for one problem. curves[method][seed] = incumbent curve."""
    regrets, best, worst = regret_table(curves, budget)
    at = grid(budget)
    points = {s: int(round(s * GRID)) - 1 for s in SHARES}
    out = {"best": best, "worst": worst, "budget": budget, "methods": {}}
    means = {m: mean_curve(list(c.values()), budget, worst) for m, c in curves.items()}
    ranks = average_ranks(regrets)
    final = {m: {seed: float(v[-1]) for seed, v in r.items()} for m, r in regrets.items()}
    area = {m: {seed: float(v.mean()) for seed, v in r.items()} for m, r in regrets.items()}
    for m, by_seed in regrets.items():
        r = stacked(by_seed)
        row = {"seeds": len(r),
               "regret_at": {str(s): bootstrap_mean(r[:, i]) for s, i in points.items()},
               "regret_auc": bootstrap_mean(r.mean(axis=1)),
               "final_regret": bootstrap_mean(r[:, -1]),
               "mean_best_loss": float(means[m][-1]),
               "best_loss_by_seed": {seed: float(np.nan_to_num(best_so_far(c, at[-1:]), nan=worst)[0])
                                     for seed, c in curves[m].items()},
               "rank_at": {str(s): float(ranks[m][i]) for s, i in points.items()},
               "mean_rank": float(ranks[m].mean())}
        if baseline in means:
            value, exact = speedup(means[m], means[baseline], budget)
            row["speedup"] = {"value": value, "exact": exact}
        if default in regrets and m != default:
            row["wilcoxon_p_final"] = wilcoxon_p(final[default], final[m])
            row["wilcoxon_p_auc"] = wilcoxon_p(area[default], area[m])
        out["methods"][m] = row
    out["mean_curves"] = {m: [[float(t), float(v)] for t, v in zip(at, c)] for m, c in means.items()}
    out["mean_regret_curves"] = {m: stacked(r).mean(axis=0).tolist() for m, r in regrets.items()}
    out["bands"] = {m: band(stacked(r)) for m, r in regrets.items()}
    return out
