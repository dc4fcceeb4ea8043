"""The thin adapter between the HF Trainer and the detectors and Optuna's pruner."""

from __future__ import annotations

import math
import statistics
import time

from optuna.trial import TrialState
from transformers import TrainerCallback

from search import attrs, progress
from search.spec import StudySpec
from workers.detectors import (DivergenceDetector, GradientExplosionDetector, GradientVanishingDetector,
                               OverfittingDetector, PlateauDetector, Verdict)
from workers.ranks import SOLO, UPLOAD_TIMEOUT

# Verdicts of convergence: the trial ends early as COMPLETE, its value the best eval loss it
# reached (and its checkpoint there the one it keeps). The others end it as PRUNED.
CONVERGENCE = (PlateauDetector.name, OverfittingDetector.name)  # convergence: they complete a trial
PAUSE = "rung"  # the asha pruner's verdict: paused at a rung, its checkpoint kept for a promotion
WALL_CLOCK_CAP = "wall-clock cap"  # the spec's max_trial_hours: stopped where it is


class PruningCallback(TrainerCallback):
    """Evaluates (and checkpoints) at the trial's evaluation points; feeds train losses to
    the divergence detector, gradient norms to the explosion and vanishing detectors,
    eval losses (with the train losses between evaluations) to the plateau and
    overfitting detectors and to the Optuna pruner; the first verdict stops training.

    On a trial of several ranks (workers/ranks.py) rank 0 decides, with `trial` its own; the
    other ranks (`trial` None) receive each decision at the same event, so that every rank
    stops at the same step."""

    def __init__(self, trial, spec: StudySpec, total_steps: int, should_stop=lambda: False, ranks=SOLO):
        d = spec.detectors
        self.trial, self.spec, self.should_stop, self.total_steps = trial, spec, should_stop, total_steps
        self.ranks = ranks
        claimed = ((trial.user_attrs.get(attrs.WORKER) or {}).get("claimed_at") if trial is not None else None)
        self.started = claimed or time.time()  # the cap counts from the claim: out-of-memory retries included
        self.points = progress.eval_points(spec, total_steps)  # step -> the keys reported under
        self.divergence = DivergenceDetector(d.divergence_ratio, d.divergence_rise, d.divergence_patience)
        self.plateau = PlateauDetector(d.plateau_window, d.plateau_min_improvement)
        self.explosion = GradientExplosionDetector(d.explosion_ratio, d.explosion_patience)
        self.vanishing = GradientVanishingDetector(d.vanishing_ratio, d.vanishing_patience)
        self.overfitting = OverfittingDetector(d.overfit_ratio, d.overfit_gap, d.overfit_patience)
        self.verdict: Verdict | None = None
        self.interrupted = False
        self.eval_losses: dict[int, float] = {}
        self.started_at_step = 0  # above 0 when the Trainer resumed a checkpoint
        self.log_history: list = []  # the Trainer's, kept up to date by it

    def keys(self, step: int) -> list[int]:
        return self.points.get(step) or [progress.key(self.spec, step / self.total_steps)]

    @property
    def best(self) -> float | None:
        """The trial's value: the best eval loss it reached."""
        finite = [v for v in self.eval_losses.values() if math.isfinite(v)]
        return min(finite) if finite else None

    @property
    def paused(self) -> bool:
        return self.verdict is not None and self.verdict.detector == PAUSE

    def _end(self, verdict, control, keep: bool = False):
        if verdict is not None and self.verdict is None:
            self.verdict = verdict
            control.should_training_stop = True
            control.should_save = keep

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run: the detectors see the inherited history first (nothing is reported again)."""
        self.started_at_step, self.log_history = state.global_step, state.log_history
        for logs in state.log_history:
            if "loss" in logs:
                self._train_log(logs["step"], logs)
            if "eval_loss" in logs:
                self._eval_loss(logs["step"], float(logs["eval_loss"]))

    def on_step_end(self, args, state, control, **kwargs):
        if self.ranks.share(self.ranks.owner and self.should_stop()):
            self.interrupted = True
            control.should_training_stop = True
        elif state.global_step in self.points:  # a checkpoint at every evaluation, to resume from
            control.should_evaluate = control.should_save = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            verdicts = [v for v in self._train_log(state.global_step, logs) if v is not None]
            hours = (time.time() - self.started) / 3600
            if self.ranks.owner and self.spec.max_trial_hours and hours >= self.spec.max_trial_hours:
                verdicts.insert(0, Verdict(WALL_CLOCK_CAP, state.global_step, {"hours": round(hours, 3),
                                                                               "cap": self.spec.max_trial_hours}))
            self._end(self.ranks.share(verdicts[0] if verdicts else None), control)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics or self.verdict is not None:
            return
        step, loss = state.global_step, float(metrics["eval_loss"])
        decided = self.ranks.share(self._judge(step, loss) if self.ranks.owner else None)
        if math.isfinite(loss):
            self.eval_losses[step] = loss
        if decided is not None:
            verdict, keep, save = decided
            self._end(verdict, control, keep)
            if save is not None:
                control.should_save = save

    def _judge(self, step: int, loss: float) -> tuple:
        """Rank 0's decision on an evaluation: (verdict, keep its checkpoint, save or None).
        The evaluation is reported under each of its keys in turn, the pruner asked after each
        (search/progress.py: a short trial's rung can share a step with later keys)."""
        if not math.isfinite(loss):
            return Verdict(DivergenceDetector.name, step, {"rule": "non-finite eval loss", "loss": str(loss)}), False, None
        best_before = self.best
        new_best = best_before is None or loss < best_before
        verdicts = [v for v in self._eval_loss(step, loss) if v is not None]
        at_end = step >= self.total_steps  # the run is done: stopping it now would save nothing
        for key in self.keys(step):
            self.trial.report(loss, key)
            if not (at_end or verdicts) and self.trial.should_prune():
                return self._pruner_verdict(step, key), self.spec.pruner == "asha", None
        if at_end:
            return None, False, new_best  # the checkpoint a trial keeps is its best
        if verdicts:
            return verdicts[0], verdicts[0].detector in CONVERGENCE and new_best, None
        return None

    def on_save(self, args, state, control, **kwargs):
        """Every rank has written its part of the checkpoint (its RNG state) before rank 0
        uploads it (workers/checkpoint.py, the next callback)."""
        self.ranks.barrier()


    def _train_log(self, step: int, logs: dict) -> list:
        loss = float(logs["loss"])
        self.overfitting.add_train_loss(loss)
        verdicts = [self.divergence.update(step, loss)]
        if logs.get("grad_norm") is not None:
            norm = float(logs["grad_norm"])
            verdicts += [self.explosion.update(step, norm), self.vanishing.update(step, norm)]
        return verdicts

    def _eval_loss(self, step: int, loss: float) -> list:
        self.eval_losses[step] = loss
        return [self.plateau.update(step, loss), self.overfitting.update(step, loss)]

    def _pruner_verdict(self, step: int, key: int) -> Verdict:
        """The pruner's verdict at the key it judged, with the numbers it judged."""
        study = self.trial.study
        if self.spec.pruner == "asha":
            from search.asha import brackets, lineage, standing

            trials, config = study.get_trials(deepcopy=False), lineage(self.trial)
            values = standing(trials, self.spec, config, key, self.eval_losses[step])
            ranked = sorted(values.values())
            return Verdict(PAUSE, step, {
                "rule": f"not among the best 1/{self.spec.eta} of its bracket's configurations at this rung: "
                        "paused, checkpoint kept, promoted if it gets there",
                "bracket": brackets(trials, self.spec)[config],
                "rung": key, "loss": self.eval_losses[step], "rank": ranked.index(self.eval_losses[step]) + 1,
                "reached": len(values), "promoted": len(values) // self.spec.eta})
        others = [t.intermediate_values[key] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if key in t.intermediate_values]
        best = min(self.eval_losses.values())
        evidence = {"rule": "best eval loss so far above the median of complete trials at this step",
                    "best_loss": best, "complete_trials": len(others)}
        if others:
            evidence["median"] = statistics.median(others)
            evidence["rule"] = (f"best eval loss {best:.4f} above the median {evidence['median']:.4f} "
                                f"of {len(others)} complete trials")
        return Verdict(f"pruner:{type(study.pruner).__name__}", step, evidence)


class UploadedOnEveryRank(TrainerCallback):
    """The last callback of a trial over several ranks: the other ranks wait here, on the
    decisions' gloo group, while rank 0 uploads the checkpoint, not in the next step's
    collective, whose timeout the upload of a large model could outlast."""

    def __init__(self, ranks):
        self.ranks = ranks

    def on_save(self, args, state, control, **kwargs):
        self.ranks.barrier(UPLOAD_TIMEOUT)
