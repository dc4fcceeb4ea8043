"""Running one claimed trial on this worker: the resident base with the trial's adapter, the
Trainer with its callbacks (pruning, checkpoints, cost, timing), resumed from the trial's own
or its parent's checkpoint, and on an out-of-memory error again from the last checkpoint at
half the micro-batch (workers/batch.py). What happened is a Run; telling it is
workers/trial_outcome.py's.

A trial over several ranks (workers/ranks.py): rank 0 runs `train`, and sends each attempt's
Plan to the other ranks, which run `follow`; every rank trains the same Plan with the same
Trainer. There an out-of-memory error ends the trial on every rank (the group restarts and
the trial resumes at half the micro-batch), as any failure of a rank does."""

from __future__ import annotations

import gc
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from search import attrs, progress
from search.logs import LOG
from spaces.export import per_rank_batch
from workers.ranks import GROUP_BROKEN, SOLO, Ranks, is_rank_failure


OUT_OF_MEMORY = "out of memory at micro-batch 1 (effective batch {})"


@dataclass
class Run:
    """How a trial's training went on this worker."""

    callback: object  # the PruningCallback: verdict, eval losses, interrupted, best
    log_history: list = field(default_factory=list)
    micro_batch: int = 0
    accumulation: int = 0  # per rank: micro-batch x accumulation x ranks = the effective batch
    oom_retries: int = 0
    infeasible: str = ""  # why it cannot run here: out of memory at micro-batch 1, a batch the ranks cannot split
    timing: object = None  # the TimingCallback: seconds in steps, evaluations, checkpoints (always set by train)
    cost: dict = field(default_factory=dict)  # {"tokens", "seconds"} this trial trained itself
    ranks: int = 1
    peak_memory: int | None = None  # bytes the device's allocator held at most (CUDA only)

    @property
    def value(self) -> float | None:
        """The trial's value: the best eval loss it reached."""
        return self.callback.best


@dataclass(frozen=True)
class Plan:
    """One attempt at a trial, as every rank trains it (rank 0 sends it to the others)."""

    number: int
    params: dict
    micro_batch: int
    total_steps: int
    output_dir: str
    resume: str | None


def train(trial, params, spec, resident, artifact_store, workdir: Path, should_stop, faults=None,
          ranks: Ranks = SOLO, watch=None) -> Run:
    """Trains the trial on the resident base, continuing the trial it resumes or is promoted
    from, if any; on an out-of-memory error, again from its last checkpoint at half the micro-batch.
    `watch` (workers/stall.py) sees every step, for the lease."""
    import torch

    from workers.batch import first_micro_batch, free_device_memory, smaller
    from workers.callback import PruningCallback
    from workers.checkpoint import CheckpointCallback, restore
    from workers.cost import CostCallback
    from workers.timing import TimingCallback

    output_dir = workdir / f"trial-{trial.number}"
    shutil.rmtree(output_dir, ignore_errors=True)
    resume = restore(trial.study, trial, artifact_store, output_dir)
    total = progress.trial_steps(spec, params["batch_size"])
    timing, cost = TimingCallback(), CostCallback(trial)
    failed_at = trial.user_attrs.get(attrs.OUT_OF_MEMORY_AT)  # a rank of the trial it resumes ran out
    try:
        share = per_rank_batch(params["batch_size"], ranks.world_size)
    except ValueError as e:
        return Run(PruningCallback(trial, spec, total), infeasible=str(e), timing=timing, cost=cost.settle())
    if failed_at == 1:
        return Run(PruningCallback(trial, spec, total), [], 1, share, 1, OUT_OF_MEMORY.format(params["batch_size"]),
                   timing, cost.settle(), ranks.world_size)
    micro, retries = first_micro_batch(spec, params, free_device_memory(), ranks.world_size), 0
    if failed_at is not None:
        micro, retries = min(micro, smaller(failed_at, share)), 1
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while True:
        plan = Plan(trial.number, params, micro, total, str(output_dir), str(resume) if resume else None)
        callback = PruningCallback(trial, spec, total, should_stop=should_stop, ranks=ranks)
        try:
            attempt(ranks.share(plan), spec, resident, [callback, CheckpointCallback(trial, artifact_store, callback.points),
                                                       cost, timing, *([watch] if watch else [])], faults, ranks)
            return Run(callback, callback.log_history, micro, share // micro, retries, timing=timing,
                       cost=cost.settle(), ranks=ranks.world_size,
                       peak_memory=torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None)
        except torch.OutOfMemoryError:
            so_far = cost.settle()  # what the attempt processed counts
            if ranks.world_size > 1:  # the other ranks are stuck in a collective: the group ends here
                ranks.note_out_of_memory(trial.number, micro)
                raise
            if micro == 1:
                return Run(callback, callback.log_history, 1, share, retries, OUT_OF_MEMORY.format(params["batch_size"]),
                           timing, so_far)
            micro, retries = smaller(micro, share), retries + 1
            resume = _latest_checkpoint(output_dir) or resume


def attempt(plan: Plan, spec, resident, callbacks: list, faults=None, ranks: Ranks = SOLO) -> None:
    """Trains the plan once, on every rank alike; callbacks[0] is the PruningCallback."""
    from workers.callback import UploadedOnEveryRank
    from workers.train import build_trainer

    pruning = callbacks[0]
    if ranks.world_size > 1:
        callbacks = [*callbacks, UploadedOnEveryRank(ranks)]
    model = resident.model_for(plan.params)
    hook = faults.attach(model) if faults else None
    trainer = build_trainer(spec, plan.params, resident.data, model, plan.micro_batch, plan.total_steps,
                            plan.output_dir, callbacks, ranks.world_size)
    try:
        trainer.train(resume_from_checkpoint=plan.resume)
        if pruning.verdict is None and not pruning.interrupted and plan.total_steps not in pruning.eval_losses:
            trainer.evaluate()  # the last step's, when the run's length is not an evaluation point
        if ranks.world_size > 1:
            LOG.info(f"rank {ranks.rank}: trial {plan.number} left training at step {trainer.state.global_step}")
    finally:
        if hook is not None:
            hook.remove()
        del trainer
        resident.release(model)


def follow(ranks: Ranks, faults=None) -> int:
    """A rank other than 0: trains each plan rank 0 sends until it sends none; the exit code."""
    import torch

    from search.spec import StudySpec
    from workers.callback import PruningCallback
    from workers.train import Resident

    try:
        spec = StudySpec.from_dict(ranks.share())
        resident = Resident(spec, ranks.world_size)
        gc.freeze()  # as rank 0 does: the Trainer's gc.collect() per train() skips what is loaded
        while (plan := ranks.share()) is not None:
            try:
                attempt(plan, spec, resident, [PruningCallback(None, spec, plan.total_steps, ranks=ranks)],
                        faults, ranks)
            except torch.OutOfMemoryError:
                ranks.note_out_of_memory(plan.number, plan.micro_batch)
                LOG.info(f"rank {ranks.rank}: trial {plan.number} ran out of memory at micro-batch {plan.micro_batch}")
                return GROUP_BROKEN
    except Exception as e:
        if not is_rank_failure(e):
            raise
        LOG.info(f"rank {ranks.rank}: another rank of the trial is gone ({str(e).splitlines()[0][:120]}); leaving")
        return GROUP_BROKEN
    return 0


def _latest_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
