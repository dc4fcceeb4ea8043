from __future__ import annotations

from search.spec import Detectors  # the thresholds' one home

import statistics

from workers.detectors.verdict import Verdict


class GradientVanishingDetector:
    """Gradients vanish when the gradient norm stays below ``ratio`` times the
    median of the first ``warmup`` norms for ``patience`` logged steps in a
    row: relative, because a norm of 0.001 is healthy for one model and dead
    for another (the seed used an absolute 0.001).
    """

    name = "gradient_vanishing"  # the verdict's detector, as trials and reports show it

    def __init__(self, ratio: float = Detectors.vanishing_ratio, patience: int = Detectors.vanishing_patience, warmup: int = 5):
        self.ratio, self.patience, self.warmup = ratio, patience, warmup
        self.first: list[float] = []
        self.below = 0

    def update(self, step: int, grad_norm: float) -> Verdict | None:
        if len(self.first) < self.warmup:
            self.first.append(grad_norm)
            return None
        reference = statistics.median(self.first)
        self.below = self.below + 1 if grad_norm < self.ratio * reference else 0
        if self.below >= self.patience:
            return Verdict(self.name, step, {
                "rule": f"gradient norm below {self.ratio:g}x its early median for {self.patience} steps",
                "grad_norm": grad_norm, "early_median": reference})
        return None
