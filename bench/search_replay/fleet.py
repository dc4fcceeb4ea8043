"""A simulated fleet: W workers over simulated time, counted in training tokens.

Each worker does what `tunefleet worker` does (search/claim.py's claim, the space's
suggest, the trial, workers.trial_outcome.report) with training replaced by a recorded
run (bench/search_replay/trial.py). Time is the tokens a worker has trained; every
worker trains at the same rate. Events are evaluations and ends of trials, processed
in time order (ties by worker), so the pruner at an evaluation sees exactly what the
other workers had reported by then, and a worker that ends a trial claims its next
one at that time. A worker that finds nothing to claim tries again whenever another
trial ends; the replay ends when no worker has anything to do.

A search is the source of its trials: `TunefleetSearch` claims them from a tunefleet
study (any sampler and pruner the spec names); bench/search_replay/neps.py asks NePS.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

from optuna.trial import TrialState

from bench.search_replay.trial import ReplayTrial
from search import attrs


@dataclass
class Ended:
    """One trial as the report reads it: when (fleet tokens spent by its end), what it found."""

    trial: int
    lineage: int
    params: dict
    state: str
    paused: bool
    tokens: int
    spent: int
    found: float | None
    ended_by: str | None
    source: str | None
    run: str


@dataclass
class History:
    ended: list[Ended] = field(default_factory=list)
    spent: int = 0  # fleet tokens when the last worker went idle
    timing: dict = field(default_factory=lambda: dict.fromkeys(("claim_s", "train_s", "evaluate_s", "tell_s"), 0.0))
    """CPU seconds in the search's own code: claiming (sampling, promotions, budgets), replaying
    steps (detectors), evaluations (reports, the pruner), telling ends."""

    def incumbent(self) -> list[tuple[int, float]]:
        """(fleet tokens spent, best loss found so far) at each improvement."""
        out, best = [], math.inf
        for e in sorted(self.ended, key=lambda e: e.spent):
            if e.found is not None and e.found < best:
                best = e.found
                out.append((e.spent, best))
        return out


class TunefleetSearch:
    """Trials claimed from a tunefleet study, as its workers claim them."""

    def __init__(self, study, storage, spec, table):
        from search.study import space_of
        from storage.backend import Backend

        self.study, self.storage, self.spec, self.table = study, storage, spec, table
        self.space = space_of(spec)
        # One process drives every simulated worker, one claim at a time: no lock to take.
        self.where = Backend("replay", "database")

    def take(self):
        from search.claim import claim
        from spaces.space import suggest

        trial = claim(self.study, self.storage, self.where, self.spec)
        if trial is None:
            return None
        params = suggest(trial, self.space)
        return ReplayTrial(self.study, trial, params, self.spec, self.table.lookup(params))

    def ended(self, flight: ReplayTrial) -> None:
        pass


def replay(search, workers: int) -> History:
    """Runs the search on `workers` simulated workers until none has anything to do."""
    history = History()
    timing = history.timing
    clock, spent = 0, 0
    events: list = []  # (time, worker)
    flights: dict[int, ReplayTrial] = {}
    idle: list[int] = []

    def timed(key, f, *args):
        t0 = time.process_time()
        try:
            return f(*args)
        finally:
            timing[key] += time.process_time() - t0

    def start(worker: int, now: int) -> None:
        flight = timed("claim_s", search.take)
        if flight is None:
            idle.append(worker)
            return
        flights[worker] = flight
        heapq.heappush(events, (now + timed("train_s", flight.advance), worker))

    for w in range(workers):
        start(w, 0)
    while events:
        now, w = heapq.heappop(events)
        spent += len(flights) * (now - clock)
        clock = now
        flight = flights[w]
        if timed("evaluate_s", flight.evaluate):
            heapq.heappush(events, (now + timed("train_s", flight.advance), w))
            continue
        del flights[w]
        outcome = timed("tell_s", flight.finish)
        timed("tell_s", search.ended, flight)
        history.ended.append(_ended(flight, spent, outcome))
        start(w, now)
        retry, idle[:] = list(idle), []
        for i in retry:
            start(i, now)
    history.spent = spent
    history.timing = {k: round(v, 3) for k, v in timing.items()}
    return history


def _ended(flight: ReplayTrial, spent: int, outcome: str) -> Ended:
    frozen = flight.study.get_trials(deepcopy=False)[flight.trial.number]  # one study: numbers are indices
    found = frozen.value if frozen.state == TrialState.COMPLETE and frozen.value is not None \
        and math.isfinite(frozen.value) else None
    verdict = flight.pruning.verdict
    return Ended(trial=frozen.number, lineage=frozen.user_attrs.get(attrs.LINEAGE, frozen.number),
                 params=flight.params, state=frozen.state.name, paused=attrs.PAUSED in frozen.user_attrs,
                 tokens=int((frozen.user_attrs.get(attrs.COST) or {}).get("tokens", 0)), spent=spent, found=found,
                 ended_by=verdict.detector if verdict else None, source=frozen.user_attrs.get(attrs.SOURCE),
                 run=flight.curve.id)

