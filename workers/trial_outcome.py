"""Finishing one trial: its end told to the study (COMPLETE, PRUNED, paused at a rung, FAIL)
with its cost, batch, timing, curves, the infeasibility constraint, a note for
optuna-dashboard, its checkpoints kept or removed; a trial to resume (interrupted, a rank
failed) or a diverged one to retry at half the learning rate is marked so, and its
continuation queued at the next claim (search/continuations.py)."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from search import attrs, clock, continuations
from search.logs import LOG
from storage import optuna_compat as compat
from storage import outage
from workers.detectors import DivergenceDetector
from workers.trial_run import Run



def _note(trial, outcome: str, params: dict, callback) -> None:
    """A Markdown note on the trial, shown by optuna-dashboard: why it ended, on what evidence."""
    from optuna_dashboard import save_note

    lines = [f"## Trial {trial.number}: {outcome}", ""]
    if callback.verdict is not None:
        lines += ["| evidence | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
                  for k, v in callback.verdict.evidence.items()]
        lines.append("")
    curve = ", ".join(f"{step}: {loss:.4f}" for step, loss in callback.eval_losses.items())
    lines += [f"eval loss by step: {curve or 'none'}", "",
              "params: " + ", ".join(f"`{k}={v:.4g}`" if isinstance(v, float) else f"`{k}={v}`"
                                     for k, v in params.items())]
    save_note(trial, "\n".join(lines))


def report(study, trial, params, run: Run, artifact_store, claimed_at: float | None = None) -> str:
    """Tells the trial's end to the study, with its cost, curves, timing and a note for the
    dashboard; the outcome in words. Its value is the best eval loss it reached. Without an
    artifact store (a replayed trial: bench/search_replay) it has no checkpoints or curves,
    and everything else is told the same."""
    from workers import checkpoint, curves
    from workers.callback import CONVERGENCE

    callback, verdict, value = run.callback, run.callback.verdict, run.value
    if claimed_at is not None and run.timing.first_step_at is not None:
        t = run.timing
        trial.set_user_attr(attrs.TIMING, {"claim_to_first_step_s": round(t.first_step_at - claimed_at, 3),
                                           "steps_s": round(t.steps_s, 3), "eval_s": round(t.eval_s, 3),
                                           "checkpoint_s": round(t.checkpoint_s, 3),
                                           "trial_s": round(time.time() - claimed_at, 3)})
    trial.set_user_attr(attrs.COST, run.cost)
    if callback.interrupted:
        continuations.end_to_resume(trial.storage, compat.trial_id(trial), "interrupted",
                                    "interrupted by a signal; to resume from its checkpoint")
        return "interrupted; marked to resume from its checkpoint"
    trial.set_user_attr(attrs.BATCH, {"micro_batch": run.micro_batch, "accumulation": run.accumulation,
                                      "oom_retries": run.oom_retries, "ranks": run.ranks,
                                      "peak_memory_gib": run.peak_memory and round(run.peak_memory / 2 ** 30, 3),
                                      "started_at_step": callback.started_at_step})
    trial.set_constraint("fits_in_memory", 1.0 if run.infeasible else -1.0)
    if artifact_store is not None:
        curves.upload(trial, run.log_history, artifact_store)
    first_result = value is not None and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if run.infeasible:
        trial.set_user_attr(attrs.INFEASIBLE, run.infeasible)
        state, outcome = TrialState.PRUNED, f"infeasible: {run.infeasible}"
    elif callback.paused:
        trial.set_user_attr(attrs.PAUSED, attrs.Paused(rung=verdict.evidence["rung"], step=verdict.step))
        trial.set_user_attr(attrs.PRUNE, verdict.to_dict())
        state, outcome = TrialState.PRUNED, (f"paused at the rung at step {verdict.step} (rank "
                                             f"{verdict.evidence['rank']} of {verdict.evidence['reached']}); "
                                             "checkpoint kept for a promotion")
    elif verdict is not None and value is not None and (verdict.detector in CONVERGENCE or first_result):
        # Convergence, or the study's first result: a study never ends without a complete trial.
        trial.set_user_attr(attrs.EARLY_STOP, verdict.to_dict())
        state, outcome = TrialState.COMPLETE, (f"complete, stopped early by {verdict.detector} at step "
                                               f"{verdict.step}, best eval loss {value:.4f}")
    elif verdict is not None:
        trial.set_user_attr(attrs.PRUNE, verdict.to_dict())
        state, outcome = TrialState.PRUNED, f"pruned by {verdict.detector} at step {verdict.step}"
    elif value is None:
        raise RuntimeError("the trial ended without an evaluation")
    else:
        state, outcome = TrialState.COMPLETE, f"complete, best eval loss {value:.4f}"
    if run.oom_retries:
        outcome += f" (micro-batch {run.micro_batch} after {run.oom_retries} out-of-memory retries)"
    if state == TrialState.PRUNED and verdict is not None and verdict.detector == DivergenceDetector.name \
            and continuations.mark_retry(trial, params, callback.spec):
        outcome += "; marked for a retry at half the learning rate, within the budget"
    if artifact_store is not None:
        _note(trial, outcome, params, callback)
    clock.mark_end(trial.storage, compat.trial_id(trial))
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    if artifact_store is not None:
        checkpoint.finish(trial, artifact_store, keep_latest=callback.paused,
                          keep_best=callback.paused or state == TrialState.COMPLETE)
        if state == TrialState.COMPLETE:
            checkpoint.keep_top(study, trial, artifact_store, callback.spec.keep_best)
    if artifact_store is not None:
        _refresh_study_note(study, callback.spec, artifact_store)
    return outcome


def _refresh_study_note(study, spec, artifact_store) -> None:
    """The study's progress in its note; a note is for people to read, and never costs a trial."""
    from workers import study_note

    try:
        study_note.refresh(study, spec, artifact_store)
    except Exception as e:  # noqa: BLE001
        LOG.warning("the study's note was not refreshed: %s", f"{type(e).__name__}: {e}".splitlines()[0])


def rank_failed(study, trial, error: Exception, artifact_store, spec, out_of_memory_at: int | None = None) -> str:
    """A trial over several ranks that an error ended while its ranks trained (the group restarts
    after it: the other ranks may be stuck in a collective). A rank that died, hung or ran out
    of memory ends it on every rank, and it is queued to resume from its checkpoint, as for a
    dead worker, up to the study's max_resumes, below the micro-batch that ran out if one did;
    a lost lease or storage drops it (its lease re-queues it); any other error fails it as on
    one rank."""
    import torch

    from workers.ranks import is_rank_failure

    if isinstance(error, optuna.exceptions.UpdateFinishedTrialError):
        return "dropped: its lease ran out and it was queued again elsewhere"
    if outage.unreachable(error):
        return "abandoned: the storage went away; its lease queues it again"
    resumed = continuations.resumes(study, trial)
    if not (is_rank_failure(error) or isinstance(error, torch.OutOfMemoryError)) or resumed >= spec.max_resumes:
        return fail(study, trial, error, artifact_store) + (f" (after {resumed} resumes)" if resumed else "")
    message = f"{type(error).__name__}: {error}".splitlines()[0]
    try:
        continuations.end_to_resume(trial.storage, compat.trial_id(trial), "a rank failed",
                                    f"a rank failed ({message}); to resume from its checkpoint",
                                    {attrs.OUT_OF_MEMORY_AT: out_of_memory_at} if out_of_memory_at else None)
    except optuna.exceptions.UpdateFinishedTrialError:
        return f"a rank failed: {message} (its lease ran out meanwhile: queued again elsewhere)"
    return f"a rank failed: {message}; marked to resume from its checkpoint"


def fail(study, trial, error: Exception, artifact_store, message: str | None = None) -> str:
    """Tells the trial FAIL with `message` (by default the error's first line) as its reason,
    and removes its checkpoints."""
    from workers.checkpoint import discard

    message = message or f"{type(error).__name__}: {error}".splitlines()[0]
    try:
        trial.set_user_attr(attrs.ERROR, message)
        clock.mark_end(trial.storage, compat.trial_id(trial))
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return f"failed: {message}"  # its lease ran out meanwhile: its checkpoint is another's now
    except Exception as e:
        if not outage.unreachable(e):
            raise
        return f"failed: {message} (not recorded: the storage went away; its lease re-queues it)"
    try:
        discard(trial, artifact_store)
    except Exception:  # the store is what failed: nothing more to clean
        pass
    return f"failed: {message}"
