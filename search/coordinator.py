"""The coordinator: one long-running process per deployment that, for every
tunefleet study in the storage, re-queues trials whose worker's lease ran out
and stops studies whose budget is spent. All its state is in the storage, so
it can be restarted at any moment; workers do the same checks at each claim,
so a deployment without a coordinator is still correct, only slower to
notice a dead worker while nobody claims."""

from __future__ import annotations

import signal
import sys
import time

import optuna

from search import attrs, budget, leases
from search.spec import StudySpec
from storage import claim_lock


def say(message: str) -> None:
    print(f"[coordinator] {message}", file=sys.stderr, flush=True)


def sweep(storage, url) -> list[str]:
    """One pass over all studies; what it did, in words."""
    events = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if attrs.SPEC not in summary.user_attrs:
            continue  # not a tunefleet study
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        with claim_lock(storage, url, study.study_name):
            spec = StudySpec.from_dict(study.user_attrs[attrs.SPEC])
            for number in leases.requeue_expired(study, spec):
                events.append(f"{study.study_name}: trial {number} lost its lease; queued again to resume")
            reason = None if study.user_attrs.get(attrs.STOP) else budget.stop_reason(study, spec)
            if reason:
                budget.stop(study, reason)
                events.append(f"{study.study_name}: stopped: {reason}")
    return events


def run(storage, url, interval: float, once: bool = False) -> int:
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    say(f"watching every {interval:g} s")
    while not stopping:
        for event in sweep(storage, url):
            say(event)
        if once:
            break
        deadline = time.time() + interval
        while not stopping and time.time() < deadline:
            time.sleep(min(0.2, interval))
    return 0
