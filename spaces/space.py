"""The search space of one study: a function of (method, dataset size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spaces import priors


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a numeric range or a set of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return self.low <= value <= self.high

    def nearest(self, value: Any) -> Any:
        """The value itself if inside, else the closest one that is."""
        if self.choices is not None:
            if value in self.choices:
                return value
            return min(self.choices, key=lambda c: abs(c - value))
        return min(max(value, self.low), self.high)

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def batch_choices(n_examples: int) -> tuple[int, ...]:
    """The documented tier, widened by a factor two on each side."""
    low, high = priors.batch_tier(n_examples)
    choices, b = [], low // 2
    while b <= high * 2:
        choices.append(b)
        b *= 2
    return tuple(choices)


def build_space(method: str, n_examples: int) -> dict[str, Param]:
    lr_low, lr_high, _ = priors.LEARNING_RATE[method]
    params = [
        Param("learning_rate", lr_low, lr_high, log=True),
        Param("batch_size", choices=batch_choices(n_examples)),
        Param("lr_scheduler_type", choices=priors.SCHEDULERS),
        Param("warmup_ratio", *priors.WARMUP_RATIO),
        Param("weight_decay", *priors.WEIGHT_DECAY),
        Param("max_grad_norm", choices=priors.MAX_GRAD_NORM),
    ]
    if method in ("lora", "qlora"):
        params += [
            Param("lora_r", choices=priors.LORA_RANK),
            Param("lora_alpha_ratio", choices=priors.LORA_ALPHA_RATIO),
            Param("lora_dropout", *priors.LORA_DROPOUT),
        ]
    if method == "prefix":
        params.append(Param("num_virtual_tokens", choices=priors.PREFIX_TOKENS))
    return {p.name: p for p in params}


def suggest(trial, space: dict[str, Param]) -> dict[str, Any]:
    """Draw (or, for an enqueued trial, read back) every parameter of the space."""
    return {name: p.suggest(trial) for name, p in space.items()}


def starting_configs(method: str, space: dict[str, Param]) -> list[dict[str, Any]]:
    """The seeds' starting configurations for the method, moved inside the space."""
    return [
        {k: space[k].nearest(v) for k, v in config.items() if k in space}
        for config in priors.STARTING_CONFIGS[method]
    ]
