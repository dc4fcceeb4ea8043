"""One trial replayed from a recorded run: the product's own callbacks, fed what the Trainer
would have fed them, step by step.

workers.trial_run.train builds a Trainer whose callbacks decide everything about a trial:
the PruningCallback evaluates at the trial's points, feeds the detectors, reports to
Optuna and asks the pruner (asha pauses, the median prunes); the CostCallback writes the
tokens trained at every evaluation (the budgets read them). Here the Trainer is replaced
by a recorded run (bench/search_replay/table.py) and those same callbacks get the same
events in the Trainer's order: per step on_step_end then on_log, and on_evaluate where
the PruningCallback asked for an evaluation. A promotion starts at the step its parent
paused at, after the parent's log history (its detectors see the whole run, as they do
on a resumed Trainer), and pays only for the tokens it trains itself. The trial ends
through workers.trial_outcome.report, without artifacts.

The fleet (bench/search_replay/fleet.py) drives it: `advance` trains up to the next
evaluation or stop and says how many tokens that took; `evaluate` happens at that
simulated time, when the pruner reads what the other workers reported by then.
"""

from __future__ import annotations

import math

from transformers import TrainerControl, TrainerState

from search import attrs
from workers.callback import PruningCallback
from workers.checkpoint import inherit
from workers.cost import CostCallback
from workers.trial_outcome import report
from workers.trial_run import Run


class NotRecorded(Exception):
    """The table has no evaluation where the replayed spec evaluates: record it for this spec."""


class ReplayTrial:
    def __init__(self, study, trial, params: dict, spec, curve):
        self.study, self.trial, self.params, self.spec, self.curve = study, trial, params, spec, curve
        self.callbacks = [PruningCallback(trial, spec, curve.steps), CostCallback(trial)]
        self.pruning = self.callbacks[0]
        self.state, self.control = TrainerState(), TrainerControl()
        self.state.max_steps = curve.steps
        self.step = self._start()
        self._event("on_train_begin")
        self.ended = False

    def _start(self) -> int:
        """The step this trial starts at: for a promotion, its parent's last evaluation (where
        the parent's latest checkpoint is: asha pauses a trial there), whose values it reports
        again and whose log history it inherits."""
        parent_number = self.trial.user_attrs.get(attrs.PROMOTED_FROM)
        if parent_number is None:
            return 0
        (parent,) = [t for t in self.study.get_trials(deepcopy=False) if t.number == parent_number]
        if not parent.intermediate_values:  # nothing evaluated, no checkpoint: it starts over
            return 0
        key = max(parent.intermediate_values)
        (step,) = [s for s, keys in self.pruning.points.items() if key in keys]
        inherit(self.trial, parent, key)
        for s in range(1, step + 1):
            self.state.log_history.append(self._log(s))
            if s in self.pruning.points and s in self.curve.eval:
                self.state.log_history.append({"eval_loss": self.curve.eval[s], "step": s})
        self.state.global_step = step
        self.state.num_input_tokens_seen = self.curve.tokens[step - 1] if step else 0
        return step

    def _log(self, step: int) -> dict:
        return {"loss": self.curve.loss[step - 1], "grad_norm": self.curve.grad_norm[step - 1], "step": step}

    def _event(self, name: str, **kwargs) -> None:
        for callback in self.callbacks:
            getattr(callback, name)(None, self.state, self.control, **kwargs)

    @property
    def tokens(self) -> int:
        return int(self.state.num_input_tokens_seen)

    def advance(self) -> int:
        """Trains to the next evaluation, or to where training stops; the tokens it took."""
        before = self.tokens
        while self.step < self.curve.ended:
            self.step += 1
            self.state.global_step = self.step
            self.state.num_input_tokens_seen = self.curve.tokens[self.step - 1]
            self.control.should_evaluate = self.control.should_save = False
            self._event("on_step_end")
            logs = self._log(self.step)
            self.state.log_history.append(logs)
            self._event("on_log", logs=logs)
            if self.control.should_evaluate or self.control.should_training_stop:
                break
        return self.tokens - before

    def evaluate(self) -> bool:
        """The evaluation (if one is due) at the current step; whether training goes on."""
        if self.control.should_evaluate:
            loss = self.curve.eval.get(self.step)
            if loss is None and self.pruning.verdict is None:
                raise NotRecorded(f"run {self.curve.id} has no evaluation at step {self.step}")
            loss = math.nan if loss is None else loss  # after a verdict the evaluation is ignored
            self.state.log_history.append({"eval_loss": loss, "step": self.step})
            self._event("on_evaluate", metrics={"eval_loss": loss})
        return not (self.control.should_training_stop or self.step >= self.curve.ended)

    def finish(self) -> str:
        """Tells the trial's end, as a worker does; the outcome in words."""
        cost = self.callbacks[1].settle()
        run = Run(self.pruning, self.state.log_history, micro_batch=1, accumulation=self.params["batch_size"],
                  cost=cost, timing=None)
        self.ended = True
        return report(self.study, self.trial, self.params, run, None)

    @property
    def value(self) -> float | None:
        best = self.pruning.best
        return best if best is not None and math.isfinite(best) else None
