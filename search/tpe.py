"""Optuna's TPE, learning from each configuration once."""

from __future__ import annotations

from search.asha import one_per_configuration
from storage import optuna_compat as compat


class ConfigurationTPESampler(compat.HookedTPESampler):
    """Multivariate TPE with constant liar (parallel workers do not pile onto one region),
    whose observations are configurations, not trials: a configuration paused at a rung and
    continued by a promotion is one point, its latest trial (search/asha.py)."""

    def __init__(self, n_startup_trials: int = 10, seed: int | None = None):
        super().__init__(n_startup_trials=n_startup_trials, multivariate=True, constant_liar=True, seed=seed)

    def observed(self, trials: list) -> list:
        return one_per_configuration(trials)
