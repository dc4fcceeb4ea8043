from __future__ import annotations

from search.spec import Detectors  # the thresholds' one home

import math

from workers.detectors.verdict import Verdict


class DivergenceDetector:
    """Training has diverged when the loss

    - is not finite (nan or inf), or
    - exceeds ``ratio`` times its first value, or
    - has an exponential moving average that stays more than ``rise`` (a fraction,
      so the rule holds at any loss scale) above its running minimum for
      ``patience`` observations in a row.

    One noisy step never counts: the EMA and the patience absorb it.
    """

    name = "divergence"  # the verdict's detector, as trials and reports show it

    def __init__(self, ratio: float = Detectors.divergence_ratio, rise: float = Detectors.divergence_rise, patience: int = Detectors.divergence_patience, smoothing: float = 0.3):
        self.ratio, self.rise, self.patience, self.smoothing = ratio, rise, patience, smoothing
        self.first = self.ema = self.minimum = None
        self.above = 0

    def update(self, step: int, loss: float) -> Verdict | None:
        if not math.isfinite(loss):
            return Verdict(self.name, step, {"rule": "non-finite loss", "loss": str(loss)})
        if self.first is None:
            self.first = self.ema = self.minimum = loss
            return None
        if loss > self.ratio * self.first:
            return Verdict(self.name, step, {
                "rule": f"loss above {self.ratio:g}x its first value", "loss": loss, "first_loss": self.first})
        self.ema = self.smoothing * loss + (1 - self.smoothing) * self.ema
        self.minimum = min(self.minimum, self.ema)
        self.above = self.above + 1 if self.ema > (1 + self.rise) * self.minimum else 0
        if self.above >= self.patience:
            return Verdict(self.name, step, {
                "rule": f"smoothed loss {self.rise:.0%} above its minimum for {self.patience} steps",
                "smoothed_loss": self.ema, "minimum": self.minimum})
        return None
