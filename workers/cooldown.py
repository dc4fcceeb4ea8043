"""Evaluations of a warmup-stable-decay run on a cooled-down branch (Hägele et al., "Scaling Laws and
Compute-Optimal Training Beyond Fixed Training Durations", NeurIPS 2024).

A run under `warmup_stable_decay` holds its learning rate after warmup and decays it only over the
last COOLDOWN of its steps, so an evaluation before that measures a model that has not cooled down
and ranks runs unlike their ends. Before each evaluation short of the end, the run is branched off:
its trainable weights, optimizer and scheduler state and random generators are saved, it trains
COOLDOWN x its steps so far more with the rate falling from where it is to zero as 1 - sqrt (the
paper's best cooldown, the main run's own decay), the Trainer evaluates that, and the run is put
back as it was (the random generators before the evaluation, which draws from them too). The run
then continues exactly as if the branch had never been (tests/test_cooldown.py: every later step's
loss equal); only the evaluations and the tokens the branches trained (counted in the trial's cost)
differ. The saved state is a copy of the trainable weights and of the optimizer's state, on their
device, while a branch runs: small for adapters, twice the optimizer's memory for full fine-tuning
(not yet in spaces/memory.py's estimate). Not the default schedule: the replay's tables hold no
such runs yet (bench/README.md).
"""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import torch
from transformers import TrainerCallback

from spaces.export import WSD_COOLDOWN as COOLDOWN


def cooldown_rate(peak: float, i: int, n: int) -> float:
    """The rate of step i (0-based) of an n-step cooldown from peak: 1 - sqrt, ending at zero."""
    return peak * (1 - math.sqrt((i + 1) / n))


class CooldownBranch(TrainerCallback):
    """Cools a branch of the run down before each evaluation short of the end (module docstring)."""

    def __init__(self, trainer, total_steps: int, micro_batch: int, accumulation: int, seed: int):
        self.trainer, self.total_steps = trainer, total_steps
        self.micro_batch, self.accumulation, self.seed = micro_batch, accumulation, seed
        self._saved = None
        self.branch_tokens = 0

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_evaluate and state.global_step < self.total_steps and self._saved is None:
            self._saved = self._save()
            self._cool_down(state)
            # The generators as the run left them before the evaluation, which draws from them
            # too (a loader's seed): the run's evaluation and the branch's draw alike.
            self._restore_rng(self._saved)

    def on_evaluate(self, args, state, control, **kwargs):
        if self._saved is not None:
            self._restore(self._saved)
            self._saved = None

    def _trainable(self):
        return [p for p in self.trainer.model.parameters() if p.requires_grad]

    def _save(self) -> dict:
        t = self.trainer
        return {"weights": [p.detach().clone() for p in self._trainable()],
                "optimizer": copy.deepcopy(t.optimizer.state_dict()),
                "scheduler": copy.deepcopy(t.lr_scheduler.state_dict()),
                "rng": (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                        np.random.get_state(), random.getstate())}

    def _restore(self, saved: dict) -> None:
        t = self.trainer
        with torch.no_grad():
            for p, w in zip(self._trainable(), saved["weights"]):
                p.copy_(w)
        t.optimizer.load_state_dict(saved["optimizer"])
        t.lr_scheduler.load_state_dict(saved["scheduler"])
        t.model.zero_grad(set_to_none=True)

    @staticmethod
    def _restore_rng(saved: dict) -> None:
        cpu, cuda, np_state, py_state = saved["rng"]
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(np_state)
        random.setstate(py_state)

    def _batches(self, step: int):
        """Micro-batches of the training split in an order of their own (the main run's loader
        is not touched), different at every branch."""
        t = self.trainer
        loader = torch.utils.data.DataLoader(t.train_dataset, batch_size=self.micro_batch, shuffle=True,
                                             collate_fn=t.data_collator, drop_last=True,
                                             generator=torch.Generator().manual_seed(self.seed + step))
        while True:
            yield from loader

    def _cool_down(self, state) -> None:
        t = self.trainer
        n = max(1, round(COOLDOWN * state.global_step))
        peak = t.lr_scheduler.get_last_lr()[0]
        batches = self._batches(state.global_step)
        device = t.args.device
        model = t.model_wrapped
        model.train()
        for i in range(n):
            for group in t.optimizer.param_groups:
                group["lr"] = cooldown_rate(peak, i, n)
            for _ in range(self.accumulation):
                batch = {k: v.to(device) for k, v in next(batches).items()}
                if "attention_mask" in batch:
                    self.branch_tokens += int(batch["attention_mask"].sum())
                loss = model(**batch).loss / self.accumulation
                t.accelerator.backward(loss)
            if t.args.max_grad_norm:
                t.accelerator.clip_grad_norm_(self._trainable(), t.args.max_grad_norm)
            t.optimizer.step()
            t.optimizer.zero_grad(set_to_none=True)
        state.num_input_tokens_seen += self.branch_tokens  # what the branches trained is compute spent
        self.branch_tokens = 0
