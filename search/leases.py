"""Leases on running trials: a worker renews its trial's lease while it trains;
a trial whose lease has run out is failed and queued again (search/continuations.py),
to resume from its last checkpoint on whichever worker claims it next.

Any process may collect expired leases (workers do, before each claim); the
study-wide claim lock makes one of them do it once. A worker that comes back
after its lease ran out finds its trial finished: Optuna refuses every write
to it, so the late worker cannot overwrite the trial that replaced it.
Expiry compares the holder's clock with the collector's, in epoch seconds: machines
must agree on the time to well within a lease (NTP does; leases last minutes), not on
a time zone.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import optuna
from optuna.trial import TrialState

from search import attrs, clock
from storage import optuna_compat as compat


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def renew(storage, trial_id: int, seconds: float) -> None:
    """Raises optuna's UpdateFinishedTrialError once the trial is no longer running."""
    storage.set_trial_system_attr(trial_id, attrs.LEASE, attrs.Lease(expires=time.time() + seconds, holder=holder()))


def expired(study: optuna.Study, lease_seconds: float, now: float | None = None, trials: list | None = None) -> list:
    """Running trials whose lease ran out, among `trials` if given, else the study's."""
    now = time.time() if now is None else now
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return [t for t in trials if t.state == TrialState.RUNNING and attrs.LEASE in t.system_attrs
            and t.system_attrs[attrs.LEASE]["expires"] < now]


def adopt_unleased(study: optuna.Study, lease_seconds: float, trials: list | None = None) -> None:
    """Gives a running trial that has no lease (its claimer died between taking it and leasing
    it, or is about to lease it) one on this machine's clock: it expires unless its claimer
    renews it. Optuna's start time would say when, but in its writer's time zone."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    for t in trials:
        if t.state == TrialState.RUNNING and attrs.LEASE not in t.system_attrs:
            try:
                compat.storage_of(study).set_trial_system_attr(
                    compat.trial_id(t), attrs.LEASE, attrs.Lease(expires=time.time() + lease_seconds, holder="nobody yet"))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass


def requeue_expired(study: optuna.Study, spec, trials: list | None = None) -> list[str]:
    """Fails the trials whose lease ran out, marked to resume from their checkpoint unless
    resumed max_resumes times already, then queues every marked trial's continuation
    (search/continuations.py); what it did, in words. Call under the claim lock."""
    from search import continuations

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    adopt_unleased(study, spec.lease_seconds, trials)
    gone = expired(study, spec.lease_seconds, trials=trials)
    for t in gone:
        lease = t.system_attrs[attrs.LEASE]
        error = f"lease expired: worker {lease['holder']} stopped renewing it"
        storage, tid = compat.storage_of(study), compat.trial_id(t)
        last_seen = lease["expires"] - spec.lease_seconds  # its last renewal
        try:
            if continuations.resumes(study, t) < spec.max_resumes:
                continuations.end_to_resume(storage, tid, "lease expired", error, at=last_seen)
            else:
                storage.set_trial_user_attr(tid, attrs.ERROR, error)
                clock.mark_end(storage, tid, last_seen)
                storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker finished it meanwhile
    return continuations.queue(study, spec, study.get_trials(deepcopy=False) if gone else trials)


class Heartbeat:
    """Renews a trial's lease every quarter lease in a thread while the trial moves; `lost`
    once it no longer can: another process collected the trial, or no renewal got through
    for a whole lease (a link cut mid-call hangs it), so the lease may have been collected;
    `gone` (and lost) once the trial no longer exists: its study was deleted. Once hung() says the trial stopped moving (seconds of silence), it renews no more and
    calls on_hang(seconds)."""

    def __init__(self, storage, trial_id: int, lease_seconds: float, hung=lambda: None, on_hang=lambda s: None):
        self.storage, self.trial_id, self.lease_seconds = storage, trial_id, lease_seconds
        self.hung, self.on_hang = hung, on_hang
        self._collected = self.gone = False
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
            if (silence := self.hung()) is not None:
                self.on_hang(silence)
                return
            sent = time.time()
            try:
                renew(self.storage, self.trial_id, self.lease_seconds)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._collected = True  # collected by another process: stop working on it
                return
            except KeyError:  # deleted with its study: nobody will ever want it
                self._collected = self.gone = True
                return
            except Exception:  # the database is briefly away: the next beat tries again
                continue
            self._until = sent + self.lease_seconds
