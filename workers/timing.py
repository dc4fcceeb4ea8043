"""Where a trial's time goes on its worker: optimizer steps, evaluations,
checkpoints and everything else (claiming, building, reporting). Recorded on
each trial, so the overhead of a fleet is read off its studies."""

from __future__ import annotations

import time

from transformers import TrainerCallback


class TimingCallback(TrainerCallback):
    """Seconds inside optimizer steps, in evaluations and in checkpoints, and when
    the first step began. A step runs from the end of whatever came before it
    (the previous step, an evaluation, a checkpoint) to its own end, so it
    includes fetching and collating its batches and logging the step before.
    Register it last: a checkpoint's upload then counts."""

    def __init__(self):
        self.first_step_at: float | None = None
        self.steps_s = self.eval_s = self.checkpoint_s = 0.0
        self._mark = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step_at is None:  # later steps run from the end of what came before them
            self._mark, self.first_step_at = time.perf_counter(), time.time()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_s += self._lap()

    def on_evaluate(self, args, state, control, **kwargs):
        self.eval_s += self._lap()

    def on_save(self, args, state, control, **kwargs):
        self.checkpoint_s += self._lap()

    def _lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._mark = now - self._mark, now
        return elapsed
