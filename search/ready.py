"""The coordinator's queue of ready trials.

Behind the coordinator's proxy a worker cannot lock the study, so it must not
create trials: two workers could both take the last one. The coordinator, the
only creator there, keeps WAITING trials queued within the budget and
publishes their ids on the study (a system attr, with whether more may
come); a worker takes one as Optuna's own ask() takes a queued trial (an
atomic WAITING -> RUNNING in the storage) and samples its params then, from
the history as it is at that moment. Taking a trial reads two small attrs,
never the study's trials, so a claim costs the same at 10 or 10,000 trials.
The queue follows demand: twice the trials started in the last window, and
at least MIN_READY.
"""

from __future__ import annotations

import random
import time

import optuna
from optuna.trial import TrialState

from search import attrs
from search.budget import COUNTED

MIN_READY = 4
TICKET = "ready queue"  # attrs.SOURCE of a queued trial without params
TRIES = 8  # ids tried per claim before waiting for the next publication


def pop(study: optuna.Study) -> optuna.Trial | None:
    """Takes a published trial, or None if none is left for now."""
    published = _published(study)
    ids = list(published.get("trials", []))
    random.shuffle(ids)  # hundreds of workers must not all race for the first one
    for trial_id in ids[:TRIES]:
        try:
            if not study._storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                continue  # another worker took it
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        study._thread_local.cached_all_trials = None  # as ask() does: sample from the latest history
        return optuna.Trial(study, trial_id)
    return None


def more_may_come(study: optuna.Study) -> bool:
    """The coordinator published trials or will: the study is neither stopped nor spent."""
    return bool(_published(study).get("open", True))


def _published(study: optuna.Study) -> dict:
    return study._storage.get_study_system_attrs(study._study_id).get(attrs.READY) or {}


def top_up(study: optuna.Study, spec, window_s: float, now: float | None = None) -> int:
    """Queues trials up to the demand, within the budget, and publishes the queue;
    how many it queued. Call under the claim lock."""
    now = time.time() if now is None else now
    trials = study.get_trials(deepcopy=False)
    waiting = [t._trial_id for t in trials if t.state == TrialState.WAITING]
    room = spec.n_trials - len(waiting) - sum(t.state in COUNTED for t in trials)
    started = sum(t.datetime_start is not None and now - t.datetime_start.timestamp() < window_s for t in trials)
    stopped = bool(study.user_attrs.get(attrs.STOP))
    wanted = 0 if stopped else min(room, max(MIN_READY, 2 * started) - len(waiting))
    for _ in range(wanted):
        waiting.append(study._storage.create_new_trial(
            study._study_id, template_trial=optuna.trial.create_trial(
                state=TrialState.WAITING, system_attrs={"fixed_params": {}}, user_attrs={attrs.SOURCE: TICKET})))
    study._storage.set_study_system_attr(study._study_id, attrs.READY, {
        "trials": [] if stopped else waiting, "open": not stopped and (bool(waiting) or room > 0), "at": now})
    return max(wanted, 0)
