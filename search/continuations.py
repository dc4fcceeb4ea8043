"""Continuations: a trial that ended to be resumed from its checkpoint (FAIL, marked
attrs.RESUMABLE: interrupted, a rank failed, its lease ran out) or retried at half the
learning rate (PRUNED by divergence, marked attrs.RETRY) is continued by one queued trial.

Ending a trial and queuing its continuation are two writes, and a process or a database
may die between them. So the one who ends the trial only marks it, in the same writes as
its end (the mark first, while it still runs: a crash before its end leaves a running
trial whose lease expires). Whoever holds the claim lock next (every claim, every
coordinator sweep) queues what is marked and not yet continued: nothing is lost at any
crash point, nothing is queued twice, and a retry is queued within the budget.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search import attrs, budget, clock
from storage import optuna_compat as compat


def end_to_resume(storage, trial_id: int, why: str, error: str, extra: dict | None = None,
                  at: float | None = None) -> None:
    """Ends a running trial FAIL (at `at`, by default now) with `error` as its reason, marked to
    resume (why; `extra` attrs for its continuation). Raises UpdateFinishedTrialError if it
    ended meanwhile."""
    storage.set_trial_system_attr(trial_id, attrs.RESUMABLE, {"why": why, "extra": extra or {}})
    storage.set_trial_user_attr(trial_id, attrs.ERROR, error)
    clock.mark_end(storage, trial_id, at)
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


def mark_retry(trial: optuna.Trial, params: dict, spec) -> bool:
    """Marks a diverging trial, before it is told PRUNED, for 002's adjustment: its params
    again at half the learning rate, once (no retry of a retry), if the learning rate is
    searched and retries are on; whether it was marked (the budget is checked at queuing)."""
    from search.study import space_of

    lr = space_of(spec)["learning_rate"]
    if not spec.retry_diverged or lr.choices is not None or attrs.RETRY_OF in trial.user_attrs:
        return False
    trial.storage.set_trial_system_attr(compat.trial_id(trial), attrs.RETRY,
                                        {**params, "learning_rate": lr.nearest(params["learning_rate"] * 0.5)})
    return True


def queue(study: optuna.Study, spec, trials: list | None = None) -> list[str]:
    """Under the claim lock: one queued continuation for every marked trial that has none
    (a retry only while the budget has room for another configuration); what it queued, in words."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    continued = {t.user_attrs.get(attrs.RESUME_OF) for t in trials} | {t.user_attrs.get(attrs.RETRY_OF) for t in trials}
    said = []
    for t in trials:
        if t.number in continued:
            continue
        if t.state == TrialState.FAIL and attrs.RESUMABLE in t.system_attrs:
            mark = t.system_attrs[attrs.RESUMABLE]
            queue_resume(study, t, mark["why"], mark["extra"])
            said.append(f"trial {t.number} queued again to resume from its checkpoint ({mark['why']})")
        elif t.state == TrialState.PRUNED and attrs.RETRY in t.system_attrs:
            if budget.trials_spent(study, spec, study.get_trials(deepcopy=False)):
                continue
            study.enqueue_trial(t.system_attrs[attrs.RETRY], user_attrs={
                attrs.SOURCE: f"trial {t.number} diverged: its params at half the learning rate",
                attrs.RETRY_OF: t.number})
            said.append(f"trial {t.number} diverged: queued again at half the learning rate")
    return said


def queue_resume(study: optuna.Study, trial, why: str, extra: dict | None = None) -> None:
    """Queues the trial's params again, marked to resume from its checkpoint (with `extra` attrs)."""
    study.enqueue_trial(trial.params, user_attrs={attrs.SOURCE: f"resume of trial {trial.number} ({why})",
                                                  attrs.RESUME_OF: trial.number,
                                                  attrs.LINEAGE: trial.user_attrs.get(attrs.LINEAGE, trial.number),
                                                  **(extra or {})})


def resumes(study: optuna.Study, trial) -> int:
    """How many times this trial's run was resumed already."""
    n, by_number = 0, None
    while attrs.RESUME_OF in trial.user_attrs:
        by_number = by_number or {t.number: t for t in study.get_trials(deepcopy=False)}
        trial, n = by_number[trial.user_attrs[attrs.RESUME_OF]], n + 1
    return n
