"""Fault injection for tests: the errors a GPU raises, on a machine that has none."""

from __future__ import annotations


class OutOfMemoryAbove:
    """Raises torch's out-of-memory error in every training forward pass whose
    micro-batch is above `limit`, as a device too small for it would."""

    def __init__(self, limit: int):
        self.limit = limit

    def attach(self, model):
        """Arms the model; returns the handle whose remove() disarms it."""
        return model.register_forward_pre_hook(self._check, with_kwargs=True)

    def _check(self, module, args, kwargs):
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        if module.training and ids is not None and ids.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: micro-batch {ids.shape[0]} > {self.limit})")


class StallAt:
    """Hangs the first trial's training at its `forward`-th training forward pass, for an hour,
    as a dataloader deadlock or a stalled filesystem would."""

    def __init__(self, forward: int):
        self.forward, self.seen = forward, 0

    def attach(self, model):
        return model.register_forward_pre_hook(self._check)

    def _check(self, module, args):
        import time

        if module.training:
            self.seen += 1
            if self.seen == self.forward:
                time.sleep(3600)
