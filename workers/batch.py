"""The micro-batch a worker trains a trial with: the largest its device holds,
chosen by the memory estimate first and lowered by out-of-memory errors after.
Micro-batch x accumulation is always exactly the trial's effective batch."""

from __future__ import annotations

from search.spec import StudySpec
from spaces import memory
from spaces.export import per_rank_batch, split_batch

HEADROOM = 0.9  # of the free memory: the estimate is an estimate


def first_micro_batch(spec: StudySpec, params: dict, free_bytes: float | None, ranks: int = 1) -> int:
    """The largest micro-batch up to the study's maximum whose estimated peak fits in the
    free memory, dividing each rank's share of the effective batch; with no measure of free
    memory (CPU), the study's maximum. Never below 1: whether micro-batch 1 fits is for the
    device to say, not the estimate."""
    share = per_rank_batch(params["batch_size"], ranks)
    if free_bytes is None:
        return split_batch(share, spec.max_micro_batch)[0]
    from spaces.model import dimensions, parameter_count, read_model_config

    path = spec.model_dir()
    dims = dimensions(read_model_config(path))
    n_params, n_embedding = parameter_count(path)
    extra = {k: params[k] for k in ("lora_r", "num_virtual_tokens") if k in params}
    micro = memory.largest_micro_batch(spec.method, dims, spec.n_params or n_params, n_embedding, share,
                                       spec.seq_len, HEADROOM * free_bytes, cap=spec.max_micro_batch,
                                       checkpointing=False, ranks=ranks, **extra)
    return max(micro, 1)


def smaller(micro: int, effective: int) -> int | None:
    """The next micro-batch to try after an out-of-memory error (about half), None below 1."""
    return split_batch(effective, micro // 2)[0] if micro > 1 else None


def free_device_memory() -> float | None:
    import torch

    return float(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
