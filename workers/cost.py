"""What a trial's training cost: the non-padding tokens of every training batch it
processed (the Trainer's own count, `include_num_input_tokens_seen="non_padding"`)
and the seconds it trained, this trial's own work only: a resumed or promoted trial
starts from its checkpoint's count and adds what it trains itself; an attempt cut
short by an out-of-memory error counts what it processed. Written to the trial at
every evaluation, so budgets and `status` see running trials too."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from search import attrs


class CostCallback(TrainerCallback):
    def __init__(self, trial):
        self.trial = trial
        self.tokens, self.seconds = 0, 0.0  # of finished attempts
        self._base = self._started = self._state = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._state = state
        self._base, self._started = state.num_input_tokens_seen, time.perf_counter()

    def on_evaluate(self, args, state, control, **kwargs):
        self.trial.set_user_attr(attrs.COST, self.so_far())

    def so_far(self) -> attrs.Cost:
        state = self._state
        if self._base is None:
            return attrs.Cost(tokens=self.tokens, seconds=round(self.seconds, 3))
        return attrs.Cost(tokens=self.tokens + int(state.num_input_tokens_seen - self._base),
                          seconds=round(self.seconds + time.perf_counter() - self._started, 3))

    def settle(self) -> attrs.Cost:
        """Closes the attempt (train() returned or raised); the cost so far."""
        total = self.so_far()
        self.tokens, self.seconds = total["tokens"], total["seconds"]
        self._base = self._started = self._state = None
        return total
