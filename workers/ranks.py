"""The ranks of one multi-GPU trial: one process per rank, joined by torch.distributed.

Rank 0 owns the trial: it claims it, renews its lease, reports, checkpoints and tells; the
other ranks never touch the storage. They receive from rank 0 the study's spec once, then
each trial's plan (params, micro-batch, steps, where to resume from), and every decision
to stop training (a prune, a plateau, a signal, a lost lease) at the same callback event
where rank 0 takes it, so all ranks leave the Trainer at the same step. Decisions travel on
a gloo group of their own, beside the training group (NCCL on GPUs, gloo on CPUs), so
they never queue behind DDP's gradient buckets.

The group launcher (workers/multi_gpu.py) starts the ranks with torchrun's variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and TUNEFLEET_GROUP_DIR, a directory
its ranks share: a rank that runs out of memory leaves a note there, from which rank 0 puts
the micro-batch on the re-queued trial (`tunefleet.out_of_memory_at`), so that whichever
group resumes it starts below that.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

# A rank waits this long at a training collective or barrier for the others: short enough
# that a rank whose peer hung does not hold its GPUs for torch's default half hour (rank 0's
# checkpoint uploads are waited out on the decisions' group, UPLOAD_TIMEOUT).
TIMEOUT = datetime.timedelta(minutes=15)
# The decisions' group waits for rank 0 between trials too, while it waits for a running trial
# of another worker, say: a dead rank 0 is noticed by its closed connection, not a timeout.
IDLE_TIMEOUT = datetime.timedelta(days=7)
UPLOAD_TIMEOUT = datetime.timedelta(hours=2)  # for rank 0 to upload a checkpoint to the artifact store
GROUP_BROKEN = 3  # rank 0's exit code: a rank failed, the trial is queued to resume; restart the group


@dataclass
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group_dir: Path | None = None
    _control: object = None

    @property
    def owner(self) -> bool:
        """This rank owns the trial (talks to the storage)."""
        return self.rank == 0

    def share(self, value=None):
        """Rank 0's `value`, on every rank (a collective: every rank calls it at the same point)."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        box = [value if self.owner else None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def barrier(self, timeout: datetime.timedelta = TIMEOUT) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.monitored_barrier(group=self._control, timeout=timeout)  # names a rank that hangs

    def note_out_of_memory(self, trial_number: int, micro_batch: int) -> None:
        """Left for the trial's resume: it starts below this micro-batch."""
        if self.group_dir is not None:
            (self.group_dir / f"oom-trial-{trial_number}").write_text(str(micro_batch))

    def out_of_memory_at(self, trial_number: int | None) -> int | None:
        """The micro-batch at which a rank of this group ran out of memory on that trial, if one did."""
        if trial_number is None or self.group_dir is None:
            return None
        note = self.group_dir / f"oom-trial-{trial_number}"
        return int(note.read_text()) if note.exists() else None


SOLO = Ranks()


def from_env() -> Ranks:
    """This process's ranks, from the launcher's variables (one rank without them); joins the
    process group: NCCL on CUDA devices, else gloo over CPU processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return SOLO
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)
    group_dir = Path(os.environ["TUNEFLEET_GROUP_DIR"]) if os.environ.get("TUNEFLEET_GROUP_DIR") else None
    return Ranks(rank, world, local, group_dir, control)


def is_rank_failure(error: BaseException) -> bool:
    """A collective failed: another rank of the trial died, hung or ran out of memory (gloo
    says so in a plain RuntimeError, NCCL in a DistError)."""
    import torch.distributed as dist

    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(s in str(error) for s in ("gloo", "Gloo", "NCCL", "by peer")))
