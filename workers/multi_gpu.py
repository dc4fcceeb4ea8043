"""`tunefleet worker NAME --gpus 0,1,2,3`: one worker process per GPU, each seeing
only its own (CUDA_VISIBLE_DEVICES), all stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def parse_gpus(text: str) -> list[str]:
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus takes distinct GPU indices separated by commas, like 0,1,2 (got '{text}')")
    return gpus


def run_per_gpu(worker_args: list[str], gpus: list[str]) -> int:
    """Starts `tunefleet worker <worker_args>` once per GPU; the worst exit code."""
    children = [subprocess.Popen([sys.executable, "-m", "search.cli", "worker", *worker_args],
                                 env={**os.environ, "CUDA_VISIBLE_DEVICES": gpu}) for gpu in gpus]

    def forward(signum, frame):  # each child drains its own trial
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return max(child.wait() for child in children)


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
