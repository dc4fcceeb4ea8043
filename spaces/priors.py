"""The seed documents' numbers, encoded once.

Sources: 000 = "Hyperparameter Tuning for LLM Fine-Tuning" (reference),
002 = "Hyperparameter Tuning Skill". Where they disagree, the choice is noted.
"""

from __future__ import annotations

METHODS = ("full", "lora", "qlora", "prefix")

# 000, "Guidelines by Fine-Tuning Method": (low, high, starting point).
# 002's full-training rates (5e-4..5e-5) are pretraining scale; 000's range wins.
LEARNING_RATE = {
    "full": (1e-6, 5e-5, 2e-5),
    "lora": (1e-5, 3e-4, 2e-4),
    "qlora": (1e-5, 2e-4, 1e-4),
    "prefix": (1e-4, 1e-2, 3e-4),
}

# 000, "Batch Size Guidelines": (dataset size upper bound, (low, high)) of the
# effective batch size.
BATCH_TIERS = (
    (1_000, (8, 16)),
    (10_000, (16, 32)),
    (100_000, (32, 64)),
    (float("inf"), (64, 128)),
)

# 002 calls cosine "decay with warm restarts"; that is cosine_with_restarts,
# which neither document recommends for short fine-tuning runs.
SCHEDULERS = ("cosine", "linear", "constant_with_warmup")
WARMUP_RATIO = (0.0, 0.1)  # 000: 0.03 and 0.1; 002: 0.05 to 0.1
WEIGHT_DECAY = (0.0, 0.1)  # 002: 0.001 less, 0.01 standard, 0.1 more
MAX_GRAD_NORM = (0.3, 0.5, 1.0)  # 1.0 standard (both); 0.3 for QLoRA (000, QLoRA paper)
LORA_RANK = (4, 8, 16, 32, 64)
LORA_ALPHA_RATIO = (1, 2, 4)  # alpha / r; 000's default is r=16, alpha=32
LORA_DROPOUT = (0.0, 0.1)  # 000 default 0.05
PREFIX_TOKENS = (10, 20, 30)

# 000, "Recommended Starting Configurations", plus its FineTuningConfig defaults
# for what the quick reference leaves out (LoRA rank, alpha, dropout). Prefix
# tuning has no quick reference: its table starting point and the same defaults.
_LORA_DEFAULTS = {"lora_r": 16, "lora_alpha_ratio": 2, "lora_dropout": 0.05}
STARTING_CONFIGS = {
    "qlora": [{
        "learning_rate": 1e-4, "batch_size": 16, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1, "weight_decay": 0.05, "max_grad_norm": 0.3, **_LORA_DEFAULTS,
    }],
    "lora": [{
        "learning_rate": 2e-4, "batch_size": 16, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03, "weight_decay": 0.01, "max_grad_norm": 1.0, **_LORA_DEFAULTS,
    }],
    "full": [{
        "learning_rate": 2e-5, "batch_size": 16, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03, "weight_decay": 0.01, "max_grad_norm": 1.0,
    }],
    "prefix": [{
        "learning_rate": 3e-4, "batch_size": 16, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03, "weight_decay": 0.01, "max_grad_norm": 1.0,
        "num_virtual_tokens": 20,
    }],
}


def batch_tier(n_examples: int) -> tuple[int, int]:
    """The documented effective-batch range for a dataset of n_examples."""
    for bound, tier in BATCH_TIERS:
        if n_examples < bound:
            return tier
    raise AssertionError("the last tier is unbounded")
