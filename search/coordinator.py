"""The coordinator: one long-running process per deployment that, for every
tunefleet study in the storage, re-queues trials whose worker's lease ran out,
keeps trials queued for the workers it serves (search/ready.py) and stops
studies whose budget is spent; with --serve it is also the storage proxy of workers that hold
no database connection (storage/proxy.py). All its state is in the storage, so
it can be restarted at any moment. Workers with their own database connection
do the same checks at each claim, so a deployment of those without a
coordinator is still correct, only slower to notice a dead worker while
nobody claims."""

from __future__ import annotations

import time

import optuna

from search import attrs, budget, leases, logs, ready, ready_wire
from search.logs import LOG
from search.signals import Stop
from search.spec import StudySpec
from storage import Backend, outage
from storage import optuna_compat as compat


def sweep(storage, where: Backend, window_s: float = 10.0, queue: ready.Queue | None = None) -> list[str]:
    """One pass over all studies; what it did, in words. With a `queue` (workers behind the
    proxy), trials are queued there for the demand of the last `window_s` seconds."""
    events = []
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if queue is not None:  # the workers of a deleted study stop waiting for its trials
        queue.close_all_but({compat.study_id(s) for s in summaries})
    for summary in summaries:
        if attrs.SPEC not in summary.user_attrs:
            continue  # not a tunefleet study
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        with where.claim_lock(storage, study.study_name):
            spec = StudySpec.from_dict(study.user_attrs[attrs.SPEC])
            # One read of the trials for the whole pass (each costs more the more workers run),
            # read again only if re-queuing changed them.
            trials = study.get_trials(deepcopy=False)
            requeued = leases.requeue_expired(study, spec, trials)
            events += [f"{study.study_name}: {event}" for event in requeued]
            if requeued:
                trials = study.get_trials(deepcopy=False)
            reason = None if study.user_attrs.get(attrs.STOP) else budget.stop_reason(study, spec, trials=trials)
            if reason:
                budget.stop(study, reason)
                events.append(f"{study.study_name}: stopped: {reason}")
            if queue is not None:  # workers with their own connection create trials themselves
                ready.top_up(study, spec, window_s, queue, trials=trials)
    return events


def run(storage, where: Backend, interval: float, once: bool = False, serve: tuple[str, int] | None = None,
        artifacts: str | None = None, threads: int = 8, transfers: int = 4) -> int:
    from storage import proxy

    stopping = Stop()
    logs.to_stderr("coordinator")
    shared = optuna.storages.get_storage(storage)  # one cache of finished trials for sweeps and proxy
    queue = ready.Queue() if serve else None
    server = proxy.start(shared, where.artifacts(storage, artifacts, transfers), *serve, threads,
                         handlers=[ready_wire.handler(queue, shared)], transfers=transfers) if serve else None
    LOG.info(f"watching every {interval:g} s" + (f"; serving workers at grpc://{serve[0]}:{serve[1]}" if serve else ""))
    try:
        away = False
        while not stopping():
            try:
                events = sweep(shared, where, window_s=2 * interval, queue=queue)
            except Exception as e:
                if not outage.unreachable(e):
                    raise
                if not away:  # said once an outage; the proxy answers UNAVAILABLE meanwhile
                    LOG.info(f"storage unreachable ({type(e).__name__}); trying again every {interval:g} s")
                events, away = [], True
            else:
                if away:
                    LOG.info("storage is back")
                away = False
            for event in events:
                LOG.info(event)
            if once:
                break
            deadline = time.time() + interval
            while not stopping() and time.time() < deadline:
                time.sleep(min(0.2, interval))
    finally:
        if server is not None:
            server.stop(grace=5).wait()
    return 0
