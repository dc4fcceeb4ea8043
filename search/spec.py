"""The study spec: one validated document, stored in the study, that every process reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spaces.errors import InputError
from spaces import hub, priors
from spaces.dataset import FIELDS
from spaces.methods import METHODS
from spaces.space import build_space

SAMPLERS = ("prior", "pibo", "tpe", "random", "gp")
PRUNERS = ("asha", "median", "hyperband", "none")
TRAIN_ON = ("assistant", "all")


@dataclass
class Detectors:
    """Thresholds of the detectors that end a trial early (relative, so any loss scale works)."""

    divergence_ratio: float = 2.0
    """Diverged once the train loss exceeds this multiple of its first value."""
    divergence_rise: float = 0.2
    """Diverged once the smoothed train loss stays this fraction above its running minimum..."""
    divergence_patience: int = 5
    """...for this many logged steps in a row."""
    plateau_window: int = priors.EARLY_STOPPING["patience"]
    """Plateau: over the last this-many evaluations..."""
    plateau_min_improvement: float = priors.EARLY_STOPPING["min_improvement"]
    """...the best eval loss improved by less than this fraction."""
    explosion_ratio: float = 10.0
    """Gradient explosion: the gradient norm above this multiple of its median..."""
    explosion_patience: int = 3
    """...for this many logged steps in a row (one spike never counts)."""
    vanishing_ratio: float = 1e-3
    """Vanishing gradients: the norm below this fraction of its early median..."""
    vanishing_patience: int = 5
    """...for this many logged steps in a row."""
    overfit_ratio: float = priors.OVERFITTING["ratio"]
    """Overfitting: eval loss above this multiple of the train loss (000)..."""
    overfit_gap: float = priors.OVERFITTING["gap"]
    """...and above it by more than this (002)..."""
    overfit_patience: int = 2
    """...at this many evaluations in a row."""

    def __post_init__(self):
        _require(self.divergence_ratio > 1, "detectors.divergence_ratio must be above 1")
        _require(self.divergence_rise > 0, "detectors.divergence_rise must be positive")
        _require(self.divergence_patience >= 1, "detectors.divergence_patience must be at least 1")
        _require(self.plateau_window >= 1, "detectors.plateau_window must be at least 1")
        _require(self.plateau_min_improvement >= 0, "detectors.plateau_min_improvement must be >= 0")
        _require(self.explosion_ratio > 1, "detectors.explosion_ratio must be above 1")
        _require(0 < self.vanishing_ratio < 1, "detectors.vanishing_ratio must lie in (0, 1)")
        _require(self.overfit_ratio >= 1 and self.overfit_gap >= 0, "detectors.overfit_ratio must be >= 1, overfit_gap >= 0")
        _require(min(self.explosion_patience, self.vanishing_patience, self.overfit_patience) >= 1,
                 "detector patiences must be at least 1")


@dataclass
class StudySpec:
    """What to tune and how; validated on entry."""

    model: str
    """A model directory saved with save_pretrained (config, tokenizer, weights), or a hub id
    (`org/name`) in the local Hugging Face cache, kept as the user named it."""
    dataset: str
    """Examples with `text`, `prompt`+`completion` or chat `messages`: a JSONL, JSON, CSV or
    Parquet file, a `save_to_disk` directory, or a hub dataset id in the local cache
    (spaces/dataset.py)."""
    method: str
    """One of full, lora, qlora, prefix."""
    n_examples: int
    """Examples in the dataset (sets the batch-size tier); counted from the file unless overridden."""
    n_params: int = 0
    """Parameters of the model (sets the learning-rate class); counted from the weights unless overridden."""
    hidden_size: int = 0
    """Width of the model (from its config; 0 if unknown): narrow models take higher learning rates."""
    dataset_split: str | None = None
    """The dataset's split to train on (default: train, or its only split)."""
    eval_dataset: str | None = None
    """Where the eval examples come from (with eval_split), instead of a held-out share."""
    eval_split: str | None = None
    """The eval dataset's split (default: as dataset_split's default)."""
    columns: dict = field(default_factory=dict)
    """The dataset's own column for a field: {"text" | "prompt" | "completion" | "messages": column}."""
    train_on: str = "assistant"
    """Chat data: assistant (the loss on the assistant turns only, each with its end-of-turn
    marker) or all (every token of the rendered conversation)."""
    chat_template: str | None = None
    """A Jinja chat template to render `messages` with, for tokenizers that have none."""
    packing: bool = False
    """Padding-free packing: a micro-batch's examples are trained as one row, each attending
    only to itself (transformers' DataCollatorWithFlattening), so no compute goes to padding;
    the examples per step, and so the effective batch and the loss, stay the same."""
    space_overrides: dict = field(default_factory=dict)
    """Per hyperparameter: low/high, choices, value (fixed), centre, confidence (from --space FILE.yaml)."""
    queue_starting_configs: bool = True
    """Queue the prior's mode (each hyperparameter at its centre) as the first trial."""
    retry_diverged: bool = True
    """After a divergence, queue the same params once more at half the learning rate (002's adjustment)."""
    n_trials: int = 20
    """Configurations the study tries, over all workers (a resumed or promoted trial continues
    its configuration and does not count again)."""
    epochs: float = 0.0
    """Passes over the training split per trial (fractions allowed): a trial's optimizer steps
    follow from the dataset size and its effective batch. 0 with max_steps 0: the seeds'
    epochs for the dataset size (5 below 1k examples, 3 to 10k, 2 above)."""
    max_steps: int = 0
    """Instead of epochs: the same optimizer steps for every trial (then a larger batch buys more
    compute and more data per trial)."""
    eval_steps: int = 0
    """With max_steps: evaluate every this many steps (0: max_steps // 10)."""
    evals_per_trial: int = 10
    """With epochs: evaluations per trial, evenly spaced over its run (plus the rungs)."""
    seq_len: int = 512
    """Tokens per example after truncation."""
    eval_fraction: float = 0.1
    """Share of the dataset held out for evaluation..."""
    max_eval_examples: int = 256
    """...at most this many examples."""
    max_micro_batch: int = 8
    """Largest per-device micro-batch; the effective batch is reached by accumulation."""
    sampler: str = "prior"
    """prior (PriorBand: the prior, the incumbent's neighbourhood and uniform draws mixed by the
    evidence, search/priorband.py), pibo (TPE steered by the prior with a weight decaying as
    evidence grows, search/prior_sampler.py), tpe, random or gp."""
    pruner: str = "asha"
    """asha (asynchronous successive halving: trials pause at rungs and the best are promoted,
    continuing from their checkpoint), median, hyperband or none (the detectors run regardless)."""
    eta: int = 3
    """asha: a third (1/eta) of the trials reaching a rung go on to the next."""
    min_fraction: float = 1 / 9
    """asha: the lowest rung, as a fraction of a trial's run; rungs at min_fraction x eta^k."""
    brackets: int = 0
    """asha: Hyperband brackets, bracket b judging its configurations from rung b on (0: one
    per rung, the last running its configurations in full; 1: plain asha)."""
    max_tokens: int = 0
    """Stop starting trials once all trials together trained on this many tokens (0: no limit)."""
    keep_best: int | None = None
    """The best this-many complete trials keep their best checkpoint (default: 3 for adapters,
    1 for full fine-tuning); every other checkpoint is removed when its trial ends."""
    max_gpu_hours: float = 0.0
    """Stop starting trials once the trials so far used this many GPU-hours (0: no limit)."""
    max_wall_hours: float = 0.0
    """Stop starting trials this many hours after the study was created (0: no limit)."""
    target_value: float | None = None
    """Stop starting trials once a complete trial's eval loss is at or below this."""
    lease_seconds: float = 120.0
    """A running trial whose worker has not renewed its lease (heartbeat) for this long is
    failed and queued again, to resume from its last checkpoint on another worker."""
    max_resumes: int = 3
    """Times one trial may be resumed after lost leases before it stays failed."""
    stall_seconds: float = 1800.0
    """A trial with no training step (nor evaluation, nor checkpoint) for this long, or for 10
    times its longest such gap so far if that is longer, is hung (a dataloader deadlock, a
    stalled filesystem): it is ended and queued to resume elsewhere, and its worker exits
    (a hung trainer cannot be interrupted)."""
    max_trial_hours: float = 0.0
    """A trial that has run this long on its worker is stopped where it is and told PRUNED
    (COMPLETE if it is the study's first result), its best eval loss kept (0: no cap)."""
    seed: int = 0
    trust_remote_code: bool = False
    revision: str | None = None
    """With a hub id: the branch, tag or commit of the cached snapshot (default main)."""
    detectors: Detectors = field(default_factory=Detectors)

    def __post_init__(self):
        if isinstance(self.detectors, dict):
            self.detectors = _build(Detectors, self.detectors, "detectors.")
        _require(self.method in METHODS, f"unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        _require(self.sampler in SAMPLERS, f"unknown sampler '{self.sampler}' (choose from {', '.join(SAMPLERS)})")
        _require(self.pruner in PRUNERS, f"unknown pruner '{self.pruner}' (choose from {', '.join(PRUNERS)})")
        _require(self.n_examples >= 2, "the dataset needs at least 2 examples (one to train, one to evaluate)")
        _require(self.n_params >= 0, "n_params must not be negative")
        _require(self.n_trials >= 1, "n_trials must be at least 1")
        _require(self.max_steps >= 0 and self.epochs >= 0, "max_steps and epochs must not be negative")
        _require(not (self.max_steps and self.epochs), "give epochs or max_steps, not both")
        if self.max_steps:
            if self.eval_steps == 0:
                self.eval_steps = max(1, self.max_steps // 10)
            _require(1 <= self.eval_steps <= self.max_steps, "eval_steps must lie between 1 and max_steps")
        else:
            _require(self.eval_steps == 0, "eval_steps goes with max_steps; with epochs use evals_per_trial")
            self.epochs = self.epochs or float(priors.epochs(self.n_examples))
        _require(self.evals_per_trial >= 1, "evals_per_trial must be at least 1")
        _require(self.eta >= 2, "eta must be at least 2")
        _require(0 < self.min_fraction <= 1, "min_fraction must lie in (0, 1]")
        _require(self.brackets >= 0, "brackets must not be negative")
        _require(self.max_tokens >= 0, "max_tokens must not be negative")
        if self.keep_best is None:
            self.keep_best = METHODS[self.method].keep_best
        _require(self.keep_best >= 0, "keep_best must not be negative")
        _require(self.seq_len >= 8, "seq_len must be at least 8")
        _require(0 < self.eval_fraction < 1, "eval_fraction must lie strictly between 0 and 1")
        _require(self.max_eval_examples >= 1, "max_eval_examples must be at least 1")
        _require(self.max_gpu_hours >= 0 and self.max_wall_hours >= 0, "GPU-hour and wall-hour budgets must be >= 0")
        _require(self.lease_seconds >= 1, "lease_seconds must be at least 1")
        _require(self.stall_seconds >= 1, "stall_seconds must be at least 1")
        _require(self.max_trial_hours >= 0, "max_trial_hours must be 0 (no cap) or more")
        _require(self.max_resumes >= 0, "max_resumes must not be negative")
        _require(self.max_micro_batch >= 1, "max_micro_batch must be at least 1")
        _require(isinstance(self.space_overrides, dict), "space overrides must be a mapping")
        _require(self.train_on in TRAIN_ON, f"train_on must be one of {', '.join(TRAIN_ON)}")
        _require(isinstance(self.columns, dict) and set(self.columns) <= set(FIELDS),
                 f"columns map only the fields {', '.join(FIELDS)}")
        build_space(self.method, self.n_params, self.n_examples, self.space_overrides,
                    self.hidden_size)  # raises on a bad override

    def model_dir(self) -> Path:
        """Where the model's files are on this machine (spaces/hub.py)."""
        return hub.resolve(self.model, self.revision)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudySpec:
        return _build(cls, data, "")


def _build(cls, data: dict, prefix: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    _require(not unknown, f"unknown spec key '{prefix}{unknown[0]}'" if unknown else "")
    try:
        return cls(**data)
    except TypeError as e:
        raise InputError(f"invalid spec: {e}") from None


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)
