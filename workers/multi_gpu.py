"""`tunefleet worker NAME --gpus 0-7 [--gpus-per-trial N]`: the worker processes of one machine.

With one GPU per trial, one worker process per GPU, each seeing only its own
(CUDA_VISIBLE_DEVICES). With N GPUs per trial, the GPUs are split into groups of N, and each
group runs a trial at a time on N ranks, one process each, started with torchrun's variables
(workers/ranks.py): rank 0 is the worker, the others follow it. On a machine without CUDA,
`--gpus-per-trial N` runs one group of N CPU ranks over gloo.

A group ends when any of its ranks does: when rank 0 leaves (budget spent, a signal, an
error of its own) the others follow and nothing restarts; when another rank dies, rank 0
queues the trial to resume (or, stuck in a collective, is killed and its lease runs out),
and the group starts again on fresh processes, so a rank that ran out of memory or crashed
never leaves the next trial unable to start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from workers.ranks import GROUP_BROKEN

GRACE_S = 60  # for rank 0 to notice a dead peer and queue its trial, before it is killed
MAX_RESTARTS = 5  # in a row, each within RESTART_WINDOW_S of the last: then the group gives up
RESTART_WINDOW_S = 120


def parse_gpus(text: str) -> list[str]:
    """0,1,2 or 0-7 or 0-3,6,7: distinct GPU indices."""
    gpus, parts = [], [p.strip() for p in text.split(",")]
    for part in parts:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None or int(m[2] or m[1]) < int(m[1]):
            gpus = []
            break
        gpus += [str(i) for i in range(int(m[1]), int(m[2] or m[1]) + 1)]
    if not gpus or len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus takes distinct GPU indices like 0,1,2 or 0-7 (got '{text}')")
    return gpus


def groups_of(gpus: list[str] | None, per_trial: int) -> list[list[str] | None]:
    """The GPUs of each group (None: one group of CPU ranks, or of the GPUs the process sees)."""
    if gpus is None:
        return [None]
    if len(gpus) % per_trial:
        raise ValueError(f"--gpus {','.join(gpus)}: {len(gpus)} GPUs do not split into trials of {per_trial}")
    return [gpus[i:i + per_trial] for i in range(0, len(gpus), per_trial)]


class _Group:
    """The rank processes of one trial at a time, started again after a rank fails."""

    def __init__(self, worker_args: list[str], gpus: list[str] | None, ranks: int):
        self.worker_args, self.gpus, self.ranks = worker_args, gpus, ranks
        self.dir = tempfile.mkdtemp(prefix="tunefleet-group-")  # shared by its ranks, across restarts
        self.children: list[subprocess.Popen] = []
        self.code: int | None = None  # the group's exit code once it is over
        self.restarts, self.started, self.broken_at = 0, 0.0, None

    def start(self) -> None:
        env = dict(os.environ)
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        if self.ranks > 1:
            env.update(WORLD_SIZE=str(self.ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                       TUNEFLEET_GROUP_DIR=self.dir)
            if "--threads" in self.worker_args:  # or accelerate sets its own count on CPU ranks
                env["OMP_NUM_THREADS"] = self.worker_args[self.worker_args.index("--threads") + 1]
        self.children = [subprocess.Popen([sys.executable, "-m", "search.cli", "worker", *self.worker_args],
                                          env={**env, **({"RANK": str(r), "LOCAL_RANK": str(r)} if self.ranks > 1 else {})},
                                          preexec_fn=_die_with_launcher)
                         for r in range(self.ranks)]
        self.started, self.broken_at = time.time(), None

    def signal(self, signum: int) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def poll(self, stopping: bool) -> None:
        """Notes ranks that ended; ends or restarts the group when it is over."""
        if self.code is not None:
            return
        codes = [child.poll() for child in self.children]
        owner = codes[0]
        if owner is not None and all(c is not None for c in codes):
            self._over(owner, [c for c in codes[1:] if c], stopping)
        elif owner is not None and owner != GROUP_BROKEN:  # rank 0 left: the others follow it
            self._after(GRACE_S, kill_from=1)
        elif any(codes):  # a rank failed: rank 0 queues its trial, or is killed
            self._after(GRACE_S if owner is None else 0, kill_from=0)

    def _after(self, grace_s: float, kill_from: int) -> None:
        self.broken_at = self.broken_at or time.time()
        if time.time() - self.broken_at >= grace_s:
            for child in self.children[kill_from:]:
                if child.poll() is None:
                    child.kill()

    def _over(self, owner: int, others: list[int], stopping: bool) -> None:
        # Rank 0 queued the trial of a failed rank (GROUP_BROKEN), or was killed stuck beside it.
        failed = self.ranks > 1 and (owner == GROUP_BROKEN or owner < 0)
        if not failed or stopping:
            self.code = owner if owner >= 0 else 128 - owner
            return
        self.restarts = self.restarts + 1 if time.time() - self.started < RESTART_WINDOW_S else 1
        if self.restarts > MAX_RESTARTS:
            print(f"a rank failed {MAX_RESTARTS} times in a row within {RESTART_WINDOW_S} s of starting; "
                  "the group stops", file=sys.stderr, flush=True)
            self.code = 1
            return
        print(f"a rank failed (exit codes {[owner, *others]}); starting the group's {self.ranks} ranks again",
              file=sys.stderr, flush=True)
        self.start()


def run_groups(worker_args: list[str], gpus: list[str] | None, per_trial: int) -> int:
    """Runs the groups until each is over; the worst exit code."""
    groups = [_Group(worker_args, g, per_trial) for g in groups_of(gpus, per_trial)]
    stopping = []

    def forward(signum, frame):  # each group's rank 0 drains its trial; the others follow
        stopping.append(signum)
        for group in groups:
            group.signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    for group in groups:
        group.start()
    while any(group.code is None for group in groups):
        time.sleep(0.2)
        for group in groups:
            group.poll(bool(stopping))
    for group in groups:
        shutil.rmtree(group.dir, ignore_errors=True)
    return max(group.code for group in groups)


def _die_with_launcher() -> None:
    """In the child: killed with its launcher (even by SIGKILL, which leaves nothing to forward a
    signal), not left training on and holding its GPU; its trial's lease queues the trial again."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device_info() -> dict:
    """What a trial records of the device it trained on."""
    import torch

    info = {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1))
    else:
        info.update(device="cpu", memory_gib=None)
    return info
