"""One mapping from a trial's params to TrainingArguments and the peft config.

The worker trains with exactly these keyword arguments and `tunefleet best`
prints them, so what a user copies is what was measured.
"""

from __future__ import annotations

from typing import Any

from spaces.methods import method as method_of

# warmup_stable_decay: the rate held after warmup and decayed over the run's last WSD_COOLDOWN as
# 1 - sqrt, the cooldown Hägele et al. (NeurIPS 2024) found best; evaluations before it are made
# on a cooled-down branch of the run (workers/cooldown.py).
WSD = "warmup_stable_decay"
WSD_COOLDOWN = 0.2


def wsd_kwargs(max_steps: int) -> dict:
    """transformers' get_wsd_schedule arguments of a run of max_steps."""
    return {"num_decay_steps": max(1, round(WSD_COOLDOWN * max_steps)), "decay_type": "1-sqrt"}


def split_batch(effective: int, max_micro_batch: int) -> tuple[int, int]:
    """(micro-batch, accumulation) whose product is exactly the effective batch."""
    micro = max(d for d in range(1, min(effective, max_micro_batch) + 1) if effective % d == 0)
    return micro, effective // micro


def per_rank_batch(effective: int, ranks: int) -> int:
    """Each rank's share of the effective batch: micro-batch x accumulation x ranks is exactly it."""
    if effective % ranks:
        raise ValueError(f"an effective batch of {effective} does not split over {ranks} ranks")
    return effective // ranks


def training_arguments(params: dict, method: str, max_steps: int, eval_steps: int, max_micro_batch: int,
                       seed: int = 0, micro_batch: int | None = None, ranks: int = 1) -> dict[str, Any]:
    """The trial's TrainingArguments keywords, per rank of `ranks`: at micro_batch (a divisor
    of the rank's share of the effective batch: the worker's, after the memory estimate and any
    out-of-memory back-off), else the largest divisor up to max_micro_batch, which is also the
    eval batch on every worker."""
    share = per_rank_batch(params["batch_size"], ranks)
    micro = micro_batch or split_batch(share, max_micro_batch)[0]
    accumulation = share // micro
    return {
        "learning_rate": params["learning_rate"],
        "per_device_train_batch_size": micro,
        # Fixed, not the trial's micro-batch: the Trainer averages per-batch means,
        # so eval loss shifts with eval batching (1.7% between 1 and 4 measured).
        "per_device_eval_batch_size": max_micro_batch,
        "gradient_accumulation_steps": accumulation,
        "max_steps": max_steps,
        "lr_scheduler_type": params["lr_scheduler_type"],
        **({"lr_scheduler_kwargs": wsd_kwargs(max_steps)} if params["lr_scheduler_type"] == WSD else {}),
        # An explicit step count: no floor that a short run silently ignores.
        "warmup_steps": round(params["warmup_ratio"] * max_steps),
        "weight_decay": params["weight_decay"],
        "max_grad_norm": params["max_grad_norm"],
        "optim": method_of(method).optimizer,
        "eval_strategy": "steps",
        "eval_steps": eval_steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
    }


def peft_config(params: dict, method: str) -> dict[str, Any] | None:
    """peft config fields (None for full fine-tuning)."""
    adapter = method_of(method).adapter
    if adapter == "lora":
        return {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": params["lora_r"],
            "lora_alpha": params["lora_r"] * params["lora_alpha_ratio"],
            "lora_dropout": params["lora_dropout"],
            "target_modules": "all-linear",
        }
    if adapter == "prefix":
        return {
            "peft_type": "PREFIX_TUNING",
            "task_type": "CAUSAL_LM",
            "num_virtual_tokens": params["num_virtual_tokens"],
        }
    return None


def quantization_config(method: str) -> dict[str, Any] | None:
    """BitsAndBytesConfig fields: QLoRA's 4-bit NF4 with double quantization."""
    if not method_of(method).quantized:
        return None
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
    }
