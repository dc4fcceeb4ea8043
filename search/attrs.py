"""Names of the user attrs tunefleet keeps on studies and trials (readable in optuna-dashboard),
and the shapes of the structured ones (plain dicts in storage: JSON, read by any process)."""

from __future__ import annotations

from typing import TypedDict

SPEC = "tunefleet.spec"  # study: the study spec, one JSON document
CREATED = "tunefleet.created_at"  # study: unix time of `study create` (the wall-hour budget counts from it)
STOP = "tunefleet.stop"  # study: {"reason", "at"}: no new trials start; running ones finish
SOURCE = "tunefleet.source"  # trial: why it was queued (seed config, retry)
RETRY_OF = "tunefleet.retry_of"  # trial: the diverged trial it repeats at half the learning rate
WORKER = "tunefleet.worker"  # trial: host, pid and claim time of its worker
PRUNE = "tunefleet.prune"  # trial: detector, step and evidence that ended it
ERROR = "tunefleet.error"  # trial: the error that failed it
RESUME_OF = "tunefleet.resume_of"  # trial: the trial whose lease expired, continued from its checkpoint
OUT_OF_MEMORY_AT = "tunefleet.out_of_memory_at"  # trial: resumes one a rank of which ran out at this micro-batch
BATCH = "tunefleet.batch"  # trial: micro-batch, accumulation, ranks, out-of-memory retries, peak memory, step it started at
TIMING = "tunefleet.timing"  # trial: seconds from claim to first step, in steps, evaluations, checkpoints
INFEASIBLE = "tunefleet.infeasible"  # trial: cannot run (out of memory at micro-batch 1, or an effective
# batch its ranks cannot split); the sampler avoids its region
LINEAGE = "tunefleet.lineage"  # trial: number of the trial that started this configuration (continuations only)
PROMOTED_FROM = "tunefleet.promoted_from"  # trial: the paused trial it continues at the next rung
PAUSED = "tunefleet.paused"  # trial: {"rung": key, "step": n}: stopped at a rung, checkpoint kept, may be promoted
EARLY_STOP = "tunefleet.early_stop"  # trial: detector, step and evidence that ended it early as COMPLETE
COST = "tunefleet.cost"  # trial: {"tokens": non-padding tokens trained, "seconds": in training} by this trial itself

# System attrs (hidden in the dashboard's attribute tables): worker bookkeeping.
LEASE = "tunefleet.lease"  # trial: {"expires": unix time, "holder": "host:pid"}, renewed by heartbeats
CHECKPOINT = "tunefleet.checkpoint"  # trial: {"artifact": id, "step": n, "key": k} of its latest checkpoint
BEST_CHECKPOINT = "tunefleet.best_checkpoint"  # trial: {"artifact", "step", "key", "value"} at its best eval loss
IN_FLIGHT = "tunefleet.in_flight"  # trial: checkpoint ids a save under way may leave unpointed if killed; [] after
RESUMABLE = "tunefleet.resumable"  # trial: {"why", "extra"}: ended FAIL to be resumed (search/continuations.py)
ENDED_AT = "tunefleet.ended_at"  # trial: unix time it ended (search/clock.py: Optuna's own times are naive local ones)
RETRY = "tunefleet.retry"  # trial: the params of its retry at half the learning rate, once it diverged


class Stop(TypedDict):
    reason: str
    at: float  # unix time


class Paused(TypedDict):
    rung: int  # the reporting key of the rung (search/progress.py)
    step: int  # the optimizer step it paused at


class Cost(TypedDict):
    tokens: int  # non-padding tokens of every batch this trial trained itself
    seconds: float  # in training


class Lease(TypedDict):
    expires: float  # unix time
    holder: str  # host:pid


class Checkpoint(TypedDict):
    artifact: str  # id in the artifact store
    step: int
    key: int  # the reporting key of the evaluation it follows


class BestCheckpoint(Checkpoint):
    value: float  # the eval loss at that evaluation
