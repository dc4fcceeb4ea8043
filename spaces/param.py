"""One searched hyperparameter: the seeds' priors are written as these (spaces/priors.py),
the study's space is a dict of them (spaces/space.py), the prior sampler reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """A numeric range or a set of choices, with the prior's centre and its confidence in
    [0, 1]: how sure the documents are of the centre (1: sure, 0: no idea)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    centre: Any = None
    confidence: float = 0.5
    batch_exponent: float = 0.0
    """The centre moves with the trial's effective batch as (batch / centre_batch) ** this."""
    centre_batch: int = 0
    """The effective batch the centre is stated at."""

    def centre_for(self, batch_size: int | None) -> Any:
        """The prior's centre for a trial of this effective batch (the learning rate's moves with it)."""
        if not (self.batch_exponent and self.centre_batch and batch_size):
            return self.centre
        return self.nearest(self.centre * (batch_size / self.centre_batch) ** self.batch_exponent)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return self.low <= value <= self.high

    def nearest(self, value: Any) -> Any:
        """The value itself if inside, else the closest one that is."""
        if self.choices is not None:
            if value in self.choices:
                return value
            if isinstance(value, str):
                return self.centre
            return min(self.choices, key=lambda c: abs(c - value))
        return min(max(value, self.low), self.high)

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)
