"""Leases on running trials: a worker renews its trial's lease while it trains;
a trial whose lease has run out is failed and queued again (search/continuations.py),
to resume from its last checkpoint on whichever worker claims it next.

Any process may collect expired leases (workers do, before each claim); the
study-wide claim lock makes one of them do it once. A worker that comes back
after its lease ran out finds its trial finished: Optuna refuses every write
to it, so the late worker cannot overwrite the trial that replaced it.
Expiry compares the holder's clock with the collector's: machines must agree
on the time to well within a lease (NTP does; leases last minutes).
"""

from __future__ import annotations

import os
import socket
import threading
import time

import optuna
from optuna.trial import TrialState

from search import attrs
from storage import optuna_compat as compat


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def renew(storage, trial_id: int, seconds: float) -> None:
    """Raises optuna's UpdateFinishedTrialError once the trial is no longer running."""
    storage.set_trial_system_attr(trial_id, attrs.LEASE, attrs.Lease(expires=time.time() + seconds, holder=holder()))


def expired(study: optuna.Study, lease_seconds: float, now: float | None = None, trials: list | None = None) -> list:
    """Running trials whose lease ran out (a trial never leased expires lease_seconds after its start);
    among `trials` if given, else the study's."""
    now = time.time() if now is None else now
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    out = []
    for t in (t for t in trials if t.state == TrialState.RUNNING):
        lease = t.system_attrs.get(attrs.LEASE)
        expires = lease["expires"] if lease else t.datetime_start.timestamp() + lease_seconds
        if expires < now:
            out.append(t)
    return out


def requeue_expired(study: optuna.Study, spec, trials: list | None = None) -> list[str]:
    """Fails the trials whose lease ran out, marked to resume from their checkpoint unless
    resumed max_resumes times already, then queues every marked trial's continuation
    (search/continuations.py); what it did, in words. Call under the claim lock."""
    from search import continuations

    gone = expired(study, spec.lease_seconds, trials=trials)
    for t in gone:
        holder_ = (t.system_attrs.get(attrs.LEASE) or {}).get("holder", "unknown")
        error = f"lease expired: worker {holder_} stopped renewing it"
        storage, tid = compat.storage_of(study), compat.trial_id(t)
        try:
            if continuations.resumes(study, t) < spec.max_resumes:
                continuations.end_to_resume(storage, tid, "lease expired", error)
            else:
                storage.set_trial_user_attr(tid, attrs.ERROR, error)
                storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker finished it meanwhile
    return continuations.queue(study, spec, study.get_trials(deepcopy=False) if gone or trials is None else trials)


class Heartbeat:
    """Renews a trial's lease every quarter lease in a thread; `lost` once it no longer
    can: another process collected the trial, or no renewal got through for a whole
    lease (a link cut mid-call hangs it), so the lease may have been collected."""

    def __init__(self, storage, trial_id: int, lease_seconds: float):
        self.storage, self.trial_id, self.lease_seconds = storage, trial_id, lease_seconds
        self._collected = False
        self._until = time.time() + lease_seconds  # the claim took the first lease
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"lease-{trial_id}")

    @property
    def lost(self) -> bool:
        return self._collected or time.time() > self._until

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(timeout=1.0)  # a renewal hung on a cut link is left behind (a daemon)

    def _beat(self):
        while not self._done.wait(self.lease_seconds / 4):
            sent = time.time()
            try:
                renew(self.storage, self.trial_id, self.lease_seconds)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._collected = True  # collected by another process: stop working on it
                return
            except Exception:  # the database is briefly away: the next beat tries again
                continue
            self._until = sent + self.lease_seconds
