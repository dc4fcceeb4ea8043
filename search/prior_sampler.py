"""The prior-guided sampler: the documents' priors first, then TPE steered by
them with a weight that decays as evidence accumulates."""

from __future__ import annotations

import math

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from search import prior
from search.tpe import ConfigurationTPESampler
from spaces.param import Param
from storage import optuna_compat as compat


def _width(param: Param, batch=None) -> tuple[float, float, float]:
    """(low, high, centre) on the axis the prior lives on, the centre at this effective batch."""
    low, high = prior.bounds(param)
    return low, high, prior.axis(param, param.centre_for(batch))


class PriorGuidedSampler(ConfigurationTPESampler):
    """Draws from the prior (each hyperparameter's centre and confidence) until
    ``n_startup_trials`` configurations have finished; from then on TPE proposes, its
    acquisition multiplied by the prior raised to ``beta / n`` for n finished
    configurations (piBO, Hvarfner et al., ICLR 2022). The prior steers early and fades
    as evidence grows, so a wrong prior is recovered from.
    """

    def __init__(self, space: dict[str, Param], beta: float = 5.0, n_startup_trials: int = 4,
                 seed: int | None = None):
        super().__init__(n_startup_trials=n_startup_trials, seed=seed)
        self._space, self._beta = space, beta
        self._prior_rng = np.random.default_rng(seed)
        self._n_finished = 0
        self._sampling: dict = {}

    def _finished(self, study) -> int:
        """Configurations with a finished trial (a paused one and its promotion count once)."""
        return len(self.observed(compat.cached_trials(study, (TrialState.COMPLETE, TrialState.PRUNED))))

    def sample_independent(self, study, trial, param_name, param_distribution):
        param = self._space.get(param_name)
        if param is None or self._finished(study) >= self._n_startup_trials:
            return super().sample_independent(study, trial, param_name, param_distribution)
        return self._draw_from_prior(param, param_distribution, trial.params.get("batch_size"))

    def _draw_from_prior(self, param: Param, distribution, batch=None):
        if isinstance(distribution, CategoricalDistribution):
            p = prior.choice_probabilities(param, distribution.choices)
            return distribution.choices[self._prior_rng.choice(len(p), p=p)]
        assert isinstance(distribution, FloatDistribution)
        low, high, centre = _width(param, batch)
        x = float(np.clip(self._prior_rng.normal(centre, prior.sigma(param)), low, high))
        return math.exp(x) if param.log else x

    def before_sample(self, study, search_space) -> None:
        self._n_finished, self._sampling = self._finished(study), search_space

    def acquisition(self, values, samples):
        return values + self._beta / max(1, self._n_finished) * self._log_prior(samples)

    def _batches(self, samples: dict[str, np.ndarray]) -> list:
        """Each candidate's effective batch (the space's fixed one where it is not searched)."""
        batch, distribution = self._space.get("batch_size"), self._sampling.get("batch_size")
        n = len(next(iter(samples.values()))) if samples else 0
        if "batch_size" in samples and distribution is not None and not distribution.single():
            return [distribution.choices[int(i)] for i in samples["batch_size"]]
        return [batch.centre if batch is not None else None] * n

    def _log_prior(self, samples: dict[str, np.ndarray]) -> np.ndarray:
        """log prior density (up to a constant) of candidates in Optuna's internal representation."""
        total = 0.0
        batch = self._batches(samples)
        for name, values in samples.items():
            param, distribution = self._space.get(name), self._sampling.get(name)
            if param is None or distribution is None or distribution.single():
                continue
            if isinstance(distribution, CategoricalDistribution):
                p = prior.choice_probabilities(param, distribution.choices)
                total = total + np.log(p[values.astype(int)])
            else:
                low, high, _ = _width(param)
                centre = np.array([_width(param, b)[2] for b in batch]) if param.batch_exponent else _width(param)[2]
                x = np.log(values) if param.log else values
                total = total - 0.5 * ((x - centre) / prior.sigma(param)) ** 2
        return total
