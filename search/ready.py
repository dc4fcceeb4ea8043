"""The coordinator's queue of ready trials, for workers behind its proxy.

Behind the proxy a worker cannot lock the study, so it must not create trials:
two workers could both take the last one. The coordinator, the only creator
there, keeps WAITING trials queued within the budget and hands them out itself
(the Take call, beside the storage service: search/ready_wire.py): each id goes to one worker, which
the coordinator moves WAITING -> RUNNING as Optuna's ask() does, so hundreds of
workers never race for the same row, and a worker asking while none is queued
costs the database nothing. The worker samples its params then, from the
history as it is at that moment.

The queue in memory is only a copy: the WAITING trials are in the storage, and
each sweep publishes them again, so a restarted coordinator loses nothing. Its
size follows demand: twice the trials started in the last window, or the
workers that asked in vain since the last sweep, and at least MIN_READY.
"""

from __future__ import annotations

import collections
import threading
import time

import optuna
from optuna.trial import TrialState

from search import asha, attrs, budget, clock
from storage import optuna_compat as compat

MIN_READY = 4
TICKET = "ready queue"  # attrs.SOURCE of a queued trial without params


class Queue:
    """Per study: the ids of its ready trials, whether more may come, and the takers
    that found none since the last publish."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ids: dict[int, collections.deque] = {}
        self._open: dict[int, bool] = {}
        self._misses: collections.Counter = collections.Counter()

    def publish(self, study_id: int, trial_ids: list[int], open_: bool) -> None:
        with self._lock:
            self._ids[study_id], self._open[study_id] = collections.deque(trial_ids), open_
            self._misses[study_id] = 0

    def close_all_but(self, study_ids: set[int]) -> None:
        """Studies not among study_ids were deleted: nothing more comes for their workers."""
        with self._lock:
            for gone in set(self._open) - study_ids:
                self._ids[gone], self._open[gone] = collections.deque(), False

    def misses(self, study_id: int) -> int:
        return self._misses[study_id]

    def take(self, storage, study_id: int) -> int | None:
        """A ready trial's id, now RUNNING; None if none is queued for now."""
        while True:
            with self._lock:
                ids = self._ids.get(study_id)
                if not ids:
                    self._misses[study_id] += 1
                    return None
                trial_id = ids.popleft()
            try:  # one taker per id: no two workers wait on the same row
                if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                    return trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # taken by a worker with its own connection, and finished

    def open(self, study_id: int) -> bool:
        """More trials may be queued: the study is neither stopped nor spent (as far as the
        last sweep saw; a study not swept yet may get some)."""
        with self._lock:
            return self._open.get(study_id, True)


def top_up(study: optuna.Study, spec, window_s: float, queue: Queue, now: float | None = None,
           trials: list | None = None) -> int:
    """Queues trials up to the demand, within the budget, and publishes the queue;
    how many it queued. Call under the claim lock."""
    now = time.time() if now is None else now
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    stopped = bool(study.user_attrs.get(attrs.STOP))
    promoted = [] if stopped else asha.promotions(trials, spec, budget.room(spec, trials) <= 0)
    for paused in promoted:
        asha.promote(study, paused)
    if promoted:
        trials = study.get_trials(deepcopy=False)
    # Continuations (resumes, promotions) first: their configurations are counted already.
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    waiting = [compat.trial_id(t) for t in sorted(waiting, key=lambda t: (attrs.LINEAGE not in t.user_attrs, t.number))]
    room = budget.room(spec, trials)
    started = sum(now - (clock.started(t) or 0.0) < window_s for t in trials)
    demand = max(MIN_READY, 2 * started, queue.misses(compat.study_id(study)))
    wanted = 0 if stopped else min(room, demand - len(waiting))
    for _ in range(wanted):
        waiting.append(compat.storage_of(study).create_new_trial(
            compat.study_id(study), template_trial=optuna.trial.create_trial(
                state=TrialState.WAITING, system_attrs={"fixed_params": {}}, user_attrs={attrs.SOURCE: TICKET})))
    # A running trial may yet pause and earn another's promotion: more may come while one runs.
    running = any(t.state == TrialState.RUNNING for t in trials)
    queue.publish(compat.study_id(study), [] if stopped else waiting,
                  not stopped and (bool(waiting) or room > 0 or running))
    return max(wanted, 0)


def take(study: optuna.Study, trial_id: int) -> optuna.Trial | None:
    """A WAITING trial of one's choosing, now RUNNING (None if another took it first)."""
    try:
        if not compat.storage_of(study).set_trial_state_values(trial_id, TrialState.RUNNING):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    return running(study, trial_id)


def running(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The Trial object of a trial just moved to RUNNING, as ask() returns it."""
    compat.forget_cached_trials(study)  # as ask() does: sample from the latest history
    return optuna.Trial(study, trial_id)
