"""The claim protocol: how a worker gets its next trial, the one path to `study.ask()`.

Directly on the storage, under the study's claim lock: re-queue the trials whose
lease ran out (search/leases.py), stop at the budget (search/budget.py), promote a
paused configuration that earned it (search/asha.py), then ask for a new trial, or
once no new configuration may start, take a queued continuation. Behind the
coordinator the lock is not ours: the coordinator does all of that and queues
trials (search/ready.py), and the worker pops one. Either way the trial is leased
to the claimer and its WORKER attr says who.
"""

from __future__ import annotations

import os
import socket
import time

import optuna
from optuna.trial import TrialState

from search import asha, attrs, budget, leases, ready, ready_wire
from search.logs import LOG
from search.spec import StudySpec
from storage import Backend
from storage import optuna_compat as compat


def claim(study: optuna.Study, storage, where: Backend, spec: StudySpec,
          device: dict | None = None) -> optuna.Trial | None:
    """The next trial, or None if the study's budget is spent or (behind a coordinator)
    none is queued for now. Trials whose worker's lease ran out are queued again first,
    and paused configurations that earned a promotion (search/asha.py) before new ones."""
    if where.behind_coordinator:  # it re-queues, promotes, enforces budgets and queues trials
        trial = ready_wire.pop(study)
        if trial is None:
            return None
        leases.renew(storage, compat.trial_id(trial), spec.lease_seconds)
    else:
        with where.claim_lock(storage, study.study_name):
            # Re-read: `study create --resume` may have raised the budget meanwhile.
            spec = StudySpec.from_dict(study.user_attrs[attrs.SPEC])
            for event in leases.requeue_expired(study, spec):
                LOG.info(event)
            trial = next_trial(study, spec)
            if trial is None:
                return None
            leases.renew(storage, compat.trial_id(trial), spec.lease_seconds)  # before the lock lets others look
    trial.set_user_attr(attrs.WORKER, {"host": socket.gethostname(), "pid": os.getpid(), "claimed_at": time.time(),
                                       **(device or {})})
    return trial


def next_trial(study: optuna.Study, spec: StudySpec) -> optuna.Trial | None:
    """Under the claim lock: a promotion or a queued continuation, else a new trial within the budget."""
    trials = study.get_trials(deepcopy=False)
    if budget.stop_reason(study, spec, trials=trials):
        return None
    spent = budget.trials_spent(study, spec, trials)
    for paused in asha.promotions(trials, spec, spent)[:1]:
        asha.promote(study, paused)
        trials = study.get_trials(deepcopy=False)
    if not spent:
        return study.ask()
    # No new configuration may start; the queued ones are counted already (continuations first).
    queued = sorted((t for t in trials if t.state == TrialState.WAITING),
                    key=lambda t: (attrs.LINEAGE not in t.user_attrs, t.number))
    for t in queued:
        taken = ready.take(study, compat.trial_id(t))
        if taken is not None:
            return taken
    return None
