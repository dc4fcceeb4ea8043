from __future__ import annotations

from search.spec import Detectors  # the thresholds' one home

import math
import statistics

from workers.detectors.verdict import Verdict


class GradientExplosionDetector:
    """Gradients explode when the (pre-clipping) gradient norm stays above
    ``ratio`` times the median of all earlier norms for ``patience`` logged
    steps in a row, or is not finite. One spike is not an explosion: the
    seed's single-value rule would end healthy runs.
    """

    name = "gradient_explosion"  # the verdict's detector, as trials and reports show it

    def __init__(self, ratio: float = Detectors.explosion_ratio, patience: int = Detectors.explosion_patience, warmup: int = 5):
        self.ratio, self.patience, self.warmup = ratio, patience, warmup
        self.norms: list[float] = []
        self.above = 0

    def update(self, step: int, grad_norm: float) -> Verdict | None:
        if not math.isfinite(grad_norm):
            return Verdict(self.name, step, {"rule": "non-finite gradient norm", "grad_norm": str(grad_norm)})
        if len(self.norms) >= self.warmup:
            typical = statistics.median(self.norms)
            self.above = self.above + 1 if grad_norm > self.ratio * typical else 0
            if self.above >= self.patience:
                return Verdict(self.name, step, {
                    "rule": f"gradient norm above {self.ratio:g}x its median for {self.patience} steps",
                    "grad_norm": grad_norm, "median": typical})
            if self.above:  # a spike does not become the new normal
                return None
        self.norms.append(grad_norm)
        return None
