"""Study-wide budgets: whether another trial may start, judged from the storage
alone, so every worker and the coordinator reach the same answer."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from search import attrs, clock

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def configurations(trials, states=COUNTED) -> int:
    """Configurations started among trials in these states: a resumed or promoted trial
    continues its configuration (attrs.LINEAGE) and does not count again."""
    return len({t.user_attrs.get(attrs.LINEAGE, t.number) for t in trials if t.state in states})


def room(spec, trials) -> int:
    """Configurations that may still start: n_trials less those started or queued (a queued
    trial is always within the budget: a seed, a retry, a continuation of a counted one)."""
    return spec.n_trials - configurations(trials, COUNTED + (TrialState.WAITING,))


def trials_spent(study: optuna.Study, spec, trials: list | None = None) -> bool:
    """All n_trials configurations are taken."""
    return room(spec, study.get_trials(deepcopy=False) if trials is None else trials) <= 0


def compute(trials) -> dict:
    """Training compute of all trials so far (running ones up to their last evaluation)."""
    costs = [t.user_attrs.get(attrs.COST) or {} for t in trials]
    return {"tokens": sum(c.get("tokens", 0) for c in costs),
            "seconds": round(sum(c.get("seconds", 0.0) for c in costs), 3)}


def stop_reason(study: optuna.Study, spec, now: float | None = None, trials: list | None = None) -> str | None:
    """Why no trial may start any more, whatever happens to the running ones; None if they may.
    Judged on `trials` if given (one read of the study serves a whole sweep), else the study's."""
    now = time.time() if now is None else now
    stop = study.user_attrs.get(attrs.STOP)
    if stop:
        return stop["reason"]
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    if spec.max_tokens:
        tokens = compute(trials)["tokens"]
        if tokens >= spec.max_tokens:
            return f"token budget spent ({tokens:,} of {spec.max_tokens:,} training tokens)"
    used = gpu_hours(trials, now) if spec.max_gpu_hours else 0.0
    if spec.max_gpu_hours and used >= spec.max_gpu_hours:
        return f"GPU-hour budget spent ({used:.3f} of {spec.max_gpu_hours:g} h)"
    created = study.user_attrs.get(attrs.CREATED)
    if spec.max_wall_hours and created and (now - created) / 3600 >= spec.max_wall_hours:
        return f"wall-time budget spent ({spec.max_wall_hours:g} h since the study was created)"
    if spec.target_value is not None:
        done = [t.value for t in trials if t.state == TrialState.COMPLETE]
        if done and min(done) <= spec.target_value:
            return f"target reached (eval loss {min(done):.4f} <= {spec.target_value:g})"
    return None


def gpu_hours(trials, now: float) -> float:
    """GPU time of every trial that ran, running ones up to now: its wall time from its claim
    (search/clock.py) on each of its ranks (one GPU each)."""
    seconds = 0.0
    for t in trials:
        start = clock.started(t)
        if start is None:
            continue
        end = clock.ended(t)
        end = now if end is None and t.state == TrialState.RUNNING else end or start
        ranks = t.user_attrs.get(attrs.WORKER, {}).get("world_size", 1)
        seconds += max(0.0, end - start) * ranks
    return seconds / 3600


def stop(study: optuna.Study, reason: str) -> None:
    """Drain the study: running trials finish, none starts."""
    study.set_user_attr(attrs.STOP, attrs.Stop(reason=reason, at=time.time()))
