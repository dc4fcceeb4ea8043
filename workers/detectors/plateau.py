from __future__ import annotations

from search.spec import Detectors  # the thresholds' one home

from workers.detectors.verdict import Verdict


class PlateauDetector:
    """A plateau: over the last ``window`` evaluations, the best loss improved on
    the best before them by less than ``min_improvement``, a fraction of that
    earlier best (relative, so a loss of 0.001 can plateau as well as one of 3).
    """

    name = "plateau"  # the verdict's detector, as trials and reports show it

    def __init__(self, window: int = Detectors.plateau_window, min_improvement: float = Detectors.plateau_min_improvement):
        self.window, self.min_improvement = window, min_improvement
        self.history: list[float] = []

    def update(self, step: int, loss: float) -> Verdict | None:
        self.history.append(loss)
        if len(self.history) <= self.window:
            return None
        before = min(self.history[: -self.window])
        recent = min(self.history[-self.window:])
        improvement = (before - recent) / abs(before) if before else 0.0
        if improvement < self.min_improvement:
            return Verdict(self.name, step, {
                "rule": f"best loss improved by less than {self.min_improvement:.1%} over {self.window} evaluations "
                        f"({before:.4f} -> {recent:.4f})",
                "improvement": improvement, "best_before": before, "best_recent": recent})
        return None
