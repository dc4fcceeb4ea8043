"""The seed documents' numbers, encoded once, with their reconciliation.

Sources: 000 = "Hyperparameter Tuning for LLM Fine-Tuning" (reference),
002 = "Hyperparameter Tuning Skill". Where they disagree the choice is made
here and explained in docs/priors.md; tests check every value below against
that table.

Each searched hyperparameter is a Param (spaces/param.py): a range, a prior
centre and a confidence. The prior-guided sampler turns centre and confidence
into a prior density. What each method trains and how is spaces/methods.py.
"""

from __future__ import annotations

from spaces.param import Param

# 002's model-size classes, by parameter count (upper bound exclusive).
SIZE_CLASSES = (("small", 1e9), ("medium", 10e9), ("large", 30e9), ("xlarge", float("inf")))



# Learning rate: (low, high, centre) by method and size class, at the method's
# reference batch (REFERENCE_BATCH; see docs/priors.md for every source).
# - full: 000's range 1e-6..5e-5 and start 2e-5 (a 7-8B model: "medium"); 002's
#   full-training rates (5e-4..5e-5) are pretraining scale and rejected, but its
#   trend by size is kept (x2.5 small, x0.5 large, x0.25 xlarge). Published full
#   fine-tuning recipes run these rates at batch 128 (Alpaca, Vicuna, Zephyr,
#   Tulu 2: 2e-5 at 7-13B; Tulu 2/3 70B: 1e-5 / 2e-6), so that is their batch.
# - lora: at batch 16, the published batch-128 sweep (tinker-cookbook, Llama 3
#   and Qwen3/3.5, 1B-70B) brought down by the square-root rule and joined with
#   the QLoRA paper's rates at batch 16: 1-10B 3e-4..1e-3 at 128 (geometric mean
#   5.5e-4 -> 1.9e-4) and QLoRA 7B 2e-4: 2e-4; 10-30B 27B 3e-4 (-> 1.1e-4) and
#   QLoRA 13B 2e-4: 1.5e-4; >30B 3e-4 for all three models (-> 1.1e-4) and QLoRA
#   33B/65B 1e-4: 1.1e-4; below 1B no sweep: 002's trend (5e-4). Range = 000's
#   1e-5..3e-4 joined with 002's 0.5x..2x of its LoRA rate by size.
# - qlora: the QLoRA paper's rates at its batch 16 as centre (000: "similar to
#   LoRA"); range = 000's 1e-5..2e-4 joined with 002's QLoRA 2e-4..5e-4 and 2x the centre.
# - prefix (peft's PrefixTuningConfig, no projection MLP): 1e-3..3e-1, centre 1e-2, the
#   published runs without the MLP, all on models 1024 wide: P-Tuning v2's scripts 5e-3..6e-2
#   (median ~7e-3, batch 8-32, BERT/RoBERTa-large), peft's own examples 1e-2 (t5-large,
#   roberta-large) and 3e-2 (bloomz-560m). 000's 1e-4..1e-2 from 3e-4 are the rates of
#   prefix tuning with its MLP (Li & Liang: 5e-5), not peft's default. No size trend is documented.
# - every range reaches at least 10x its centre: the documents' ranges stop
#   2.5x above their starting points, so a search could never learn that a
#   higher rate is better; the prior, not the range, keeps draws near the centre.
LEARNING_RATE = {
    "full": {"small": (1e-6, 5e-4, 5e-5), "medium": (1e-6, 2e-4, 2e-5),
             "large": (1e-6, 1e-4, 1e-5), "xlarge": (1e-6, 5e-5, 5e-6)},
    "lora": {"small": (1e-5, 5e-3, 5e-4), "medium": (1e-5, 2e-3, 2e-4),
             "large": (1e-5, 2e-3, 1.5e-4), "xlarge": (1e-5, 1.1e-3, 1.1e-4)},
    "qlora": {"small": (1e-5, 5e-3, 5e-4), "medium": (1e-5, 2e-3, 2e-4),
              "large": (1e-5, 2e-3, 2e-4), "xlarge": (1e-5, 1e-3, 1e-4)},
    "prefix": {size: (1e-3, 3e-1, 1e-2) for size, _ in SIZE_CLASSES},
}
# The effective batch each method's rates above are stated at, and how they move with it:
# Adam's best rate grows as the square root of the batch (Malladi et al., NeurIPS 2022;
# Granziol et al., JMLR 2022), not linearly as 002 says (that is SGD's rule).
REFERENCE_BATCH = {"full": 128, "lora": 16, "qlora": 16, "prefix": 16}
BATCH_EXPONENT = 0.5
LEARNING_RATE_CONFIDENCE = 0.6

# 000, "Batch Size Guidelines": (dataset size upper bound, (low, high)) of the
# effective batch; the prior centre is the tier's low end (000's three starting
# configs all use 16), searched from half the low end to twice the high end.
BATCH_TIERS = (
    (1_000, (8, 16)),
    (10_000, (16, 32)),
    (100_000, (32, 64)),
    (float("inf"), (64, 128)),
)
BATCH_CONFIDENCE = 0.4

# 000's starting configs: epochs by dataset size (5 below 1k, 3 to 10k, 2 above).
EPOCH_TIERS = ((1_000, 5), (10_000, 3), (float("inf"), 2))

# 002 calls cosine "decay with warm restarts"; that is cosine_with_restarts,
# which neither document recommends for short fine-tuning runs.
SCHEDULER = Param("lr_scheduler_type", choices=("cosine", "linear", "constant_with_warmup"), centre="cosine",
                  confidence=0.4)
# 000: 0.03 (LoRA, full) and 0.1 (QLoRA, small data); 002: 0.05 to 0.1 with a
# 100-step floor that its own 10% cap defeats on short runs: no floor here.
WARMUP_RATIO = Param("warmup_ratio", 0.0, 0.1, centre=0.03, confidence=0.4)
WEIGHT_DECAY = Param("weight_decay", 0.0, 0.1, centre=0.01, confidence=0.5)  # 002: 0.001 less, 0.01 standard, 0.1 more
# 1.0 in both documents; 0.3 for QLoRA (000's QLoRA config, the QLoRA paper).
MAX_GRAD_NORM = Param("max_grad_norm", choices=(0.3, 0.5, 1.0), centre=1.0, confidence=0.5)
MAX_GRAD_NORM_QLORA = Param("max_grad_norm", choices=(0.3, 0.5, 1.0), centre=0.3, confidence=0.5)
LORA_RANK = Param("lora_r", choices=(4, 8, 16, 32, 64), centre=16, confidence=0.4)  # 000's default r=16
LORA_ALPHA_RATIO = Param("lora_alpha_ratio", choices=(1, 2, 4), centre=2, confidence=0.5)  # 000's alpha=32 for r=16
LORA_DROPOUT = Param("lora_dropout", 0.0, 0.1, centre=0.05, confidence=0.4)  # 000's default
PREFIX_TOKENS = Param("num_virtual_tokens", choices=(10, 20, 30), centre=20, confidence=0.3)  # peft's default

# 002's early stopping: 3 evaluations without improvement. Its threshold 0.001
# is absolute; tunefleet's is relative instead (any loss scale): the best eval loss
# improving by less than 0.5% over 3 evaluations (the plateau detector's defaults).
EARLY_STOPPING = {"patience": 3, "min_improvement": 0.005}
# Overfitting: 000 flags eval > 1.5 x train, 002 flags eval - train > 0.1.
# Both must hold: the ratio keeps the absolute rule from firing at a high loss
# (3.00 vs 3.11), the gap keeps the ratio from firing near zero (0.01 vs 0.02).
OVERFITTING = {"ratio": 1.5, "gap": 0.1}

# 000, "Recommended Starting Configurations", plus its FineTuningConfig defaults
# for what the quick reference leaves out (LoRA rank, alpha, dropout). Prefix
# tuning has no quick reference: the published rate above and the same defaults.
# The learning-rate finder trains these; a study's first trial is the prior's mode
# instead (search/study.py), which ranks higher on the replay's tables (bench/README.md).
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
        "learning_rate": 1e-2, "batch_size": 16, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03, "weight_decay": 0.01, "max_grad_norm": 1.0,
        "num_virtual_tokens": 20,
    }],
}


def _tier(table, n_examples: int):
    for bound, value in table:
        if n_examples < bound:
            return value
    raise AssertionError("the last tier is unbounded")


def batch_tier(n_examples: int, epochs: float | None = None) -> tuple[int, int]:
    """The documented effective-batch range for a dataset of n_examples. The seeds state their
    tiers for runs of their own epochs (EPOCH_TIERS): a shorter run (fewer passes, as a
    fractional-epoch trial) is placed by the examples it trains on against each tier's bound
    times its epochs, so that it is not left with a handful of optimizer steps; never higher
    than the dataset's own tier."""
    by_size = _tier(BATCH_TIERS, n_examples)
    if not epochs:
        return by_size
    trained = epochs * n_examples
    for bound, tier in BATCH_TIERS:
        if trained < bound * _tier(EPOCH_TIERS, bound - 1):
            return min(tier, by_size)
    return by_size


def epochs(n_examples: int) -> int:
    return _tier(EPOCH_TIERS, n_examples)


def size_class(n_params: float) -> str:
    return _tier([(bound, name) for name, bound in SIZE_CLASSES], n_params)


# Below the documents' smallest class: models narrower than those the "small"
# class was tuned on (hidden ~1024: 0.3-1B models) take higher rates. tunefleet
# extrapolates with muP's rule for Adam (learning rate ~ 1 / width): the
# documents say nothing about such models, and without it a 1M-parameter model
# would be searched 10-60x below its optimum.
REFERENCE_WIDTH = 1024


def width_factor(hidden_size: int) -> float:
    """How much higher a narrow model's learning rates are (1 at and above the reference width)."""
    return REFERENCE_WIDTH / hidden_size if 0 < hidden_size < REFERENCE_WIDTH else 1.0


def batch_factor(method: str, batch_size: int | None) -> float:
    """How much higher the learning rate is at this effective batch than at the method's reference."""
    return (batch_size / REFERENCE_BATCH[method]) ** BATCH_EXPONENT if batch_size else 1.0


def learning_rate(method: str, n_params: float, hidden_size: int = 0, batch_size: int | None = None) -> Param:
    """The learning-rate prior at this effective batch (None: the method's reference batch);
    hidden_size 0 means unknown (no width correction)."""
    low, high, centre = LEARNING_RATE[method][size_class(n_params)]
    k = width_factor(hidden_size) * batch_factor(method, batch_size)
    return Param("learning_rate", low * k, min(high * k, 1.0), centre=centre * k,
                 confidence=LEARNING_RATE_CONFIDENCE, log=True)
