"""A trial's start and end in epoch seconds, the same on every machine.

Optuna's datetime_start and datetime_complete are naive local times of whichever machine
wrote them (a worker, the coordinator, a collector in another time zone), so comparing
them across machines is off by the zones between them. tunefleet keeps its own: the
claim time in the WORKER attr and the end in the ENDED_AT system attr, written by whoever
ends the trial.
"""

from __future__ import annotations

import time

from search import attrs


def started(t) -> float | None:
    """When the trial was claimed (a trial tunefleet did not claim: Optuna's start, read in
    this machine's zone); None if it never started."""
    claimed = (t.user_attrs.get(attrs.WORKER) or {}).get("claimed_at")
    if claimed is None and t.datetime_start is not None:
        return t.datetime_start.timestamp()
    return claimed


def ended(t) -> float | None:
    """When the trial ended; None while it runs. A trial ended before tunefleet kept its end
    has its Optuna duration after its start (both times written by one machine, as a rule)."""
    if attrs.ENDED_AT in t.system_attrs:
        return t.system_attrs[attrs.ENDED_AT]
    if t.datetime_complete is None or t.datetime_start is None:
        return None
    return started(t) + (t.datetime_complete - t.datetime_start).total_seconds()


def mark_end(storage, trial_id: int, at: float | None = None) -> None:
    """Writes the trial's end (now, or `at`), just before the write that ends it."""
    storage.set_trial_system_attr(trial_id, attrs.ENDED_AT, time.time() if at is None else at)
