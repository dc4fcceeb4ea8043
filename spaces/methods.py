"""What differs between the fine-tuning methods, one record each (as peft keeps one config
class per adapter type): adding a method is one entry here plus its rows in spaces/priors.py.

The search space (spaces/space.py), the TrainingArguments/peft/bitsandbytes mapping
(spaces/export.py), the memory estimate (spaces/memory.py), `suggest`'s fallbacks
(spaces/recommend.py) and the worker (workers/train.py, workers/export_trial.py) read these
fields; none of them branches on a method's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spaces import priors
from spaces.param import Param


@dataclass(frozen=True)
class Method:
    name: str
    adapter: Literal["lora", "prefix"] | None
    """The peft adapter trained on a frozen base; None: the base's own weights are trained."""
    quantized: bool
    """The frozen base is loaded in 4-bit NF4 with double quantization (bitsandbytes)."""
    optimizer: Literal["adamw_torch", "paged_adamw_8bit"]
    """TrainingArguments.optim: QLoRA's paged 8-bit AdamW (QLoRA paper), else AdamW."""
    params: tuple[Param, ...]
    """The hyperparameters searched for this method beyond the shared ones (spaces/space.py)."""
    max_grad_norm: Param
    """The clipping prior: 0.3 for QLoRA (QLoRA paper, 000), 1.0 otherwise."""
    keep_best: int
    """Checkpoints kept per study by default: a full model's are as large as the model."""
    alternatives: tuple[str, ...]
    """What `suggest` tries when this does not fit the GPU, the nearest first."""

    @property
    def mergeable(self) -> bool:
        """An adapter whose update folds into the base's weights (peft's merge_and_unload)."""
        return self.adapter == "lora"

    def shards(self, ranks: int) -> bool:
        """Over several GPUs, FSDP shards the trained weights, their gradients and optimizer
        state (full fine-tuning); adapters train under DDP, every rank holding the whole
        (possibly 4-bit) base: bitsandbytes' 4-bit weights do not shard, and an adapter's
        state is too small to be worth it."""
        return ranks > 1 and self.adapter is None

    @property
    def gradient_bytes(self) -> int:
        """Per trainable weight: bf16 when the base's own weights train, fp32 adapters."""
        return 2 if self.adapter is None else 4

    @property
    def optimizer_bytes(self) -> int:
        """Per trainable weight: AdamW's two fp32 moments (8), plus an fp32 master copy of bf16
        weights (4); paged 8-bit AdamW's two 8-bit moments (2)."""
        if self.optimizer == "paged_adamw_8bit":
            return 2
        return 12 if self.adapter is None else 8


_LORA = (priors.LORA_RANK, priors.LORA_ALPHA_RATIO, priors.LORA_DROPOUT)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("full", adapter=None, quantized=False, optimizer="adamw_torch", params=(),
           max_grad_norm=priors.MAX_GRAD_NORM, keep_best=1, alternatives=("lora", "qlora")),
    Method("lora", adapter="lora", quantized=False, optimizer="adamw_torch", params=_LORA,
           max_grad_norm=priors.MAX_GRAD_NORM, keep_best=3, alternatives=("qlora",)),
    Method("qlora", adapter="lora", quantized=True, optimizer="paged_adamw_8bit", params=_LORA,
           max_grad_norm=priors.MAX_GRAD_NORM_QLORA, keep_best=3, alternatives=()),
    Method("prefix", adapter="prefix", quantized=False, optimizer="adamw_torch", params=(priors.PREFIX_TOKENS,),
           max_grad_norm=priors.MAX_GRAD_NORM, keep_best=3, alternatives=("qlora",)),
)}


def method(name: str) -> Method:
    return METHODS[name]
