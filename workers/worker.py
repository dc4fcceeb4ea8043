"""A worker's loop: claim a trial (search/claim.py), run it (workers/trial_run.py), tell its
outcome (workers/trial_outcome.py); until the budget is spent.

While it trains, the worker renews its trial's lease (search/leases.py) and the
Trainer checkpoints at every evaluation into the artifact store, so a trial
whose worker dies is queued again and resumed from there by another worker.
SIGINT and SIGTERM end the running trial at its next step: it is told FAIL and
queued again to resume, so no trial is ever left RUNNING by this process. A
worker leaves once the budget is spent and no trial runs any more.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import socket
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search import attrs, budget, leases, logs, ready_wire
from search.claim import claim
from search.logs import LOG
from search.signals import Stop
from search.study import load, space_of
from spaces.space import suggest
from storage import backend, outage
from storage import optuna_compat as compat
from workers import disk
from workers.quiet import quiet_libraries
from workers.ranks import GROUP_BROKEN, SOLO, Ranks, from_env
from workers.stall import StallWatch
from workers.trial_outcome import fail, rank_failed, report
from workers.trial_run import follow, train

MAX_CONSECUTIVE_FAILURES = 3
EXIT_HUNG = GROUP_BROKEN  # a hung trainer: its trial is queued to resume; a group of ranks starts again
STORAGE_PATIENCE_S = 600  # a database restart or a network blip, not an outage to sit through


def run(study_name: str, url: str | None = None, threads: int | None = None, artifacts: str | None = None,
        faults=None) -> int:
    """Work on the study until its budget is spent or a signal arrives; the exit code.
    `faults` (tests only) arms the model with injected errors, e.g. OutOfMemoryAbove.
    One rank of a multi-GPU trial (workers/ranks.py) when the group launcher started it so:
    rank 0 runs this loop, the others follow it."""
    stop = Stop()
    ranks = from_env()
    rank = f" rank {ranks.rank}" if ranks.world_size > 1 else ""
    logs.to_stderr(f"worker {socket.gethostname()}:{os.getpid()}{rank}")
    quiet_libraries()
    import torch

    if threads:
        torch.set_num_threads(threads)
    if not ranks.owner:
        return follow(ranks, faults)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    where = backend(url)
    storage = where.open()
    study, spec = load(storage, study_name)
    artifact_store = where.artifacts(storage, artifacts)
    from workers.multi_gpu import device_info
    from workers.train import Resident

    ranks.share(spec.to_dict())
    resident = Resident(spec, ranks.world_size)
    device = {**device_info(), "world_size": ranks.world_size}
    # The Trainer runs a full gc.collect() at every train() (0.3 s here, per trial, over the
    # millions of objects torch and transformers import); frozen, they are no longer scanned.
    gc.freeze()
    space = space_of(spec)
    batches = space["batch_size"].choices or ()
    if ranks.world_size > 1 and any(b % ranks.world_size for b in batches):
        LOG.info(f"effective batches {', '.join(str(b) for b in batches if b % ranks.world_size)} do not split over "
                 f"{ranks.world_size} ranks: their trials are infeasible here")
    workdir = Path(tempfile.gettempdir()) / f"tunefleet-{os.getpid()}"
    failures = 0
    queued_only = where.behind_coordinator  # takes trials the coordinator queued; creates none
    broken = False
    try:
        while not stop():
            started = time.time()
            try:
                trial = claim(study, storage, where, spec, device)
            except Exception as e:
                if not outage.unreachable(e):
                    raise
                if not _wait_for_storage(study, e, stop):
                    return 1
                continue
            if trial is None:
                if queued_only and ready_wire.more_may_come(study):
                    time.sleep(random.uniform(0.5, 1.5))  # the coordinator queues trials as workers take them
                    continue
                reason = budget.stop_reason(study, spec)
                if reason is None and study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(min(spec.lease_seconds / 4, 5))  # a running trial may lose its lease and come back
                    continue
                if reason is None:  # every trial is over: only the k best keep a checkpoint
                    from workers.checkpoint import release_unkept

                    release_unkept(study, artifact_store, spec.keep_best)
                LOG.info(f"{reason or 'study budget spent'}; exiting")
                break
            watch = StallWatch(spec.stall_seconds)
            with leases.Heartbeat(storage, compat.trial_id(trial), spec.lease_seconds, watch.silence,
                                  lambda silence: _hung(storage, trial, silence)) as lease:
                outcome, failed = _work_on(study, trial, spec, space, resident, artifact_store, workdir,
                                           lambda: stop() or lease.lost, lease, faults, started, ranks, watch)
            if lease.gone:  # stopped at its next step, not at its next report, which may be an hour away
                raise KeyError(f"trial {trial.number} was deleted")
            if outcome is None:  # the storage stayed away
                return 1
            failures = failures + 1 if failed else 0
            LOG.info(f"trial {trial.number} {outcome} ({time.time() - started:.1f} s)")
            if failed is None:  # a rank of the trial failed: the others may be stuck in a collective
                broken = True
                return GROUP_BROKEN
            if failures >= MAX_CONSECUTIVE_FAILURES:
                LOG.info(f"{failures} trials failed in a row; stopping")
                return 1
        if stop() and not queued_only:  # the trial it leaves goes back to the queue now, not at the next claim
            _queue_continuations(study, storage, where)
    except KeyError:
        if study.study_name in optuna.get_all_study_names(storage):
            raise
        LOG.info(f"study '{study.study_name}' was deleted; exiting")
        return 2
    finally:
        if not broken:
            ranks.share(None)  # the other ranks leave with this one
    return 0


def _work_on(study, trial, spec, space, resident, artifact_store, workdir, should_stop, lease, faults,
             claimed_at, ranks: Ranks = SOLO, watch=None) -> tuple[str | None, bool | None]:
    """Trains and reports one claimed trial: (outcome in words, or None if the storage
    did not come back; whether the trial failed, None when a rank of it failed)."""
    try:
        params = suggest(trial, space)
        try:
            result = train(trial, params, spec, resident, artifact_store, workdir, should_stop=should_stop,
                           faults=faults, ranks=ranks, watch=watch)
        except Exception as e:
            if ranks.world_size == 1:
                raise
            # The other ranks may be inside the trial's collectives: the group ends here, whether
            # or not the storage takes the trial's end (if not, its lease queues it again).
            try:
                return rank_failed(study, trial, e, artifact_store, spec, ranks.out_of_memory_at(trial.number)), None
            except Exception as unrecorded:
                return f"a rank failed ({e}); not recorded ({type(unrecorded).__name__}): its lease re-queues it", None
        if lease.lost:
            raise optuna.exceptions.UpdateFinishedTrialError("lease lost")
        return report(study, trial, params, result, artifact_store, claimed_at=claimed_at), False
    except optuna.exceptions.UpdateFinishedTrialError:
        return "dropped: its lease ran out and it was queued again elsewhere", False
    except Exception as e:
        if not outage.unreachable(e):  # one broken trial must not leave it RUNNING or stop the worker
            return fail(study, trial, e, artifact_store, disk.explain(e, workdir)), True
        LOG.info(f"trial {trial.number} abandoned: the storage went away")  # its lease re-queues it
        if not _wait_for_storage(study, e, should_stop):
            return None, False
        return "abandoned while the storage was away; it resumes from its checkpoint", False
    finally:
        shutil.rmtree(workdir / f"trial-{trial.number}", ignore_errors=True)


def _hung(storage, trial, silence: float) -> None:
    """The trial's training stopped moving (workers/stall.py): it is ended to resume elsewhere,
    and this process exits, as a hung trainer cannot be interrupted (whoever started the
    worker starts it again)."""
    from search import continuations

    LOG.info(f"trial {trial.number} hung: no training step for {silence:.0f} s; it resumes from its checkpoint "
             f"elsewhere, and this worker exits (its trainer cannot be interrupted)")
    try:
        continuations.end_to_resume(storage, compat.trial_id(trial), "hung",
                                    f"hung: no training step for {silence:.0f} s; to resume from its checkpoint")
    except Exception as e:  # noqa: BLE001 (ended meanwhile, or the storage is away: its lease runs out)
        LOG.info(f"trial {trial.number} not ended here ({type(e).__name__}): its lease runs out instead")
    os._exit(EXIT_HUNG)


def _queue_continuations(study, storage, where) -> None:
    """Queues the continuation of a trial this worker ended to resume (search/continuations.py);
    if the storage will not take it now, the next claim or sweep of any process does."""
    from search import continuations
    from search.spec import StudySpec

    try:
        with where.claim_lock(storage, study.study_name):
            for event in continuations.queue(study, StudySpec.from_dict(study.user_attrs[attrs.SPEC])):
                LOG.info(event)
    except Exception as e:  # noqa: BLE001
        if not outage.unreachable(e):
            raise
        LOG.info("the storage is away: the next claim queues the trial to resume")


def _wait_for_storage(study, error: Exception, stop, give_up_s: float = STORAGE_PATIENCE_S) -> bool:
    """Waits for the storage to come back; False (after saying why) if it does not."""
    LOG.info(f"storage unreachable ({type(error).__name__}); retrying for up to {give_up_s / 60:g} minutes")
    if outage.wait_until_back(lambda: study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                              give_up_s, stop):
        LOG.info("storage is back")
        return True
    if not stop():
        LOG.info(f"storage unreachable for {give_up_s / 60:g} minutes; exiting")
    return stop()
