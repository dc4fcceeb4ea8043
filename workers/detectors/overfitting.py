from __future__ import annotations

from search.spec import Detectors  # the thresholds' one home

from workers.detectors.verdict import Verdict


class OverfittingDetector:
    """Overfitting: at ``patience`` evaluations in a row, the eval loss exceeds
    ``ratio`` times the train loss (000's rule) and exceeds it by more than
    ``gap`` (002's rule). Both must hold: the ratio alone fires near zero loss
    (0.01 vs 0.02), the gap alone at a high loss (3.00 vs 3.11).

    The train loss is the mean of the train losses logged since the previous
    evaluation, not the last log entry (which is usually the evaluation's own).
    """

    name = "overfitting"  # the verdict's detector, as trials and reports show it

    def __init__(self, ratio: float = Detectors.overfit_ratio, gap: float = Detectors.overfit_gap, patience: int = Detectors.overfit_patience):
        self.ratio, self.gap, self.patience = ratio, gap, patience
        self.train: list[float] = []
        self.hits = 0

    def add_train_loss(self, loss: float) -> None:
        self.train.append(loss)

    def update(self, step: int, eval_loss: float) -> Verdict | None:
        if not self.train:
            return None
        train = sum(self.train) / len(self.train)
        self.train = []
        over = eval_loss > self.ratio * train and eval_loss - train > self.gap
        self.hits = self.hits + 1 if over else 0
        if self.hits >= self.patience:
            return Verdict(self.name, step, {
                "rule": f"eval loss above {self.ratio:g}x and {self.gap:g} over train loss at "
                        f"{self.patience} evaluations",
                "eval_loss": eval_loss, "train_loss": train})
        return None
