"""A hung trainer: renewing a lease proves the worker process lives, not that its trial
moves. The watch notes every step, evaluation and checkpoint; a silence longer than the
spec's stall_seconds, or than 10 times the longest gap between two of them so far, is a
hang (the start-up before the first step, loading and building, is held to stall_seconds
alone)."""

from __future__ import annotations

import time

from transformers import TrainerCallback

SLOWEST_GAP_FACTOR = 10  # a step as slow as ten of the slowest so far is no longer a slow step


class StallWatch(TrainerCallback):
    def __init__(self, stall_seconds: float):
        self.floor = stall_seconds
        self.last = time.time()
        self.longest = 0.0
        self.started = False

    def _moved(self, *args, **kwargs):
        now = time.time()
        if self.started:
            self.longest = max(self.longest, now - self.last)
        self.last, self.started = now, True

    on_step_end = on_evaluate = on_save = _moved

    def silence(self) -> float | None:
        """Seconds since the trial last moved, once that is a hang; None while it moves."""
        quiet = time.time() - self.last
        return quiet if quiet > max(self.floor, SLOWEST_GAP_FACTOR * self.longest) else None
