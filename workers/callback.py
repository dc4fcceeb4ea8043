"""The thin adapter between the HF Trainer and the detectors and Optuna's pruner."""

from __future__ import annotations

import math
import statistics

from optuna.trial import TrialState
from transformers import TrainerCallback

from search.spec import StudySpec
from workers.detectors import (DivergenceDetector, GradientExplosionDetector, GradientVanishingDetector,
                               OverfittingDetector, PlateauDetector, Verdict)


class PruningCallback(TrainerCallback):
    """Feeds train losses to the divergence detector, gradient norms to the
    explosion and vanishing detectors, eval losses (with the train losses
    between evaluations) to the plateau and overfitting detectors and to the
    Optuna pruner; the first verdict stops training."""

    def __init__(self, trial, spec: StudySpec, should_stop=lambda: False):
        d = spec.detectors
        self.trial, self.spec, self.should_stop, self.max_steps = trial, spec, should_stop, spec.max_steps
        self.divergence = DivergenceDetector(d.divergence_ratio, d.divergence_rise, d.divergence_patience)
        self.plateau = PlateauDetector(d.plateau_window, d.plateau_min_improvement)
        self.explosion = GradientExplosionDetector(d.explosion_ratio, d.explosion_patience)
        self.vanishing = GradientVanishingDetector(d.vanishing_ratio, d.vanishing_patience)
        self.overfitting = OverfittingDetector(d.overfit_ratio, d.overfit_gap, d.overfit_patience)
        self.verdict: Verdict | None = None
        self.interrupted = False
        self.eval_losses: dict[int, float] = {}

    def _end(self, verdict, control):
        if verdict is not None and self.verdict is None:
            self.verdict = verdict
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        step, loss = state.global_step, float(logs["loss"])
        self.overfitting.add_train_loss(loss)
        self._end(self.divergence.update(step, loss), control)
        if logs.get("grad_norm") is not None:
            norm = float(logs["grad_norm"])
            self._end(self.explosion.update(step, norm), control)
            self._end(self.vanishing.update(step, norm), control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics or self.verdict is not None:
            return
        step, loss = state.global_step, float(metrics["eval_loss"])
        if not math.isfinite(loss):
            return self._end(Verdict("divergence", step, {"rule": "non-finite eval loss", "loss": str(loss)}), control)
        self.eval_losses[step] = loss
        self.trial.report(loss, step)
        if step >= self.max_steps:  # the run is done: stopping it now would save nothing
            return
        self._end(self.plateau.update(step, loss), control)
        self._end(self.overfitting.update(step, loss), control)
        if self.verdict is None and self.trial.should_prune():
            self._end(self._pruner_verdict(step), control)

    def _pruner_verdict(self, step: int) -> Verdict:
        """The pruner's verdict with the numbers it judged (as MedianPruner computes them)."""
        study = self.trial.study
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if step in t.intermediate_values]
        evidence = {"rule": "best eval loss so far above the median of complete trials at this step",
                    "best_loss": min(self.eval_losses.values()), "complete_trials": len(others)}
        if others:
            evidence["median"] = statistics.median(others)
        return Verdict(f"pruner:{type(study.pruner).__name__}", step, evidence)

    def on_step_end(self, args, state, control, **kwargs):
        if self.should_stop():
            self.interrupted = True
            control.should_training_stop = True
