"""The search space of one study: a function of (method, model size, dataset size, overrides)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from spaces import priors
from spaces.errors import InputError
from spaces.methods import method as method_of
from spaces.param import Param


def batch_choices(n_examples: int, epochs: float | None = None) -> tuple[int, ...]:
    """The documented tier, widened by a factor two on each side."""
    low, high = priors.batch_tier(n_examples, epochs)
    return tuple(2 ** k for k in range(int(math.log2(low // 2)), int(math.log2(high * 2)) + 1))


def learning_rate_param(method: str, n_params: float, hidden_size: int, batch: Param) -> Param:
    """The learning rate over the batch sizes searched: the range spans the prior's ranges at the
    smallest and largest batch, the centre moves with each trial's batch (spaces/priors.py)."""
    def at(b):
        return priors.learning_rate(method, n_params, hidden_size, b)

    smallest, largest = min(batch.choices), max(batch.choices)
    return Param("learning_rate", at(smallest).low, at(largest).high, True, None, at(batch.centre).centre,
                 priors.LEARNING_RATE_CONFIDENCE, priors.BATCH_EXPONENT, batch.centre)


def prior_space(method: str, n_params: float, n_examples: int, hidden_size: int = 0,
                epochs: float | None = None) -> dict[str, Param]:
    """The space the documents recommend, before any user override, for trials of `epochs`
    passes (None: the seeds' epochs for the size). The batch comes first: the learning rate's
    prior depends on it."""
    low, _ = priors.batch_tier(n_examples, epochs)
    batch = Param("batch_size", choices=batch_choices(n_examples, epochs), centre=low,
                  confidence=priors.BATCH_CONFIDENCE)
    m = method_of(method)
    params = (batch, learning_rate_param(method, n_params, hidden_size, batch), priors.SCHEDULER,
              priors.WARMUP_RATIO, priors.WEIGHT_DECAY, m.max_grad_norm, *m.params)
    return {p.name: p for p in params}


# What each hyperparameter may be at all, whatever the documents say: an
# override outside these bounds is an error, not a wider search.
LIMITS = {
    "learning_rate": (0.0, 1.0), "warmup_ratio": (0.0, 0.5), "weight_decay": (0.0, 1.0),
    "max_grad_norm": (0.0, 1e6), "lora_dropout": (0.0, 0.9), "batch_size": (1, 65536),
    "lora_r": (1, 4096), "lora_alpha_ratio": (0.0625, 64), "num_virtual_tokens": (1, 1024),
}
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay")
OVERRIDE_KEYS = {"low", "high", "centre", "confidence", "choices", "value", "log"}


def _check_value(name: str, value: Any) -> None:
    if name == "lr_scheduler_type":
        if value not in SCHEDULERS:
            raise InputError(f"space: {name}: unknown scheduler '{value}'")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"space: {name}: {value!r} is not a number")
    low, high = LIMITS[name]
    if not (low < value <= high if name in ("learning_rate", "max_grad_norm") else low <= value <= high):
        raise InputError(f"space: {name}: {value} is outside what it can be ({low}..{high})")
    if name in ("batch_size", "lora_r", "num_virtual_tokens") and value != int(value):
        raise InputError(f"space: {name}: {value} must be a whole number")


def _override(param: Param, spec: Any) -> Param:
    name = param.name
    if not isinstance(spec, dict):
        spec = {"value": spec}
    unknown = sorted(set(spec) - OVERRIDE_KEYS)
    if unknown:
        raise InputError(f"space: {name}: unknown field '{unknown[0]}' (use {', '.join(sorted(OVERRIDE_KEYS))})")
    if "confidence" in spec and not (isinstance(spec["confidence"], (int, float)) and 0 <= spec["confidence"] <= 1):
        raise InputError(f"space: {name}: confidence must lie in [0, 1]")
    if "value" in spec:  # fixed: a single choice
        _check_value(name, spec["value"])
        return replace(param, low=None, high=None, log=False, choices=(spec["value"],), centre=spec["value"])
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise InputError(f"space: {name}: choices must be a non-empty list")
        for c in choices:
            _check_value(name, c)
        param = replace(param, low=None, high=None, log=False, choices=tuple(choices),
                        centre=param.centre if param.centre in choices else choices[0])
    elif "low" in spec or "high" in spec:
        if param.choices is not None:
            raise InputError(f"space: {name}: takes 'choices' or 'value', not a range")
        low, high = spec.get("low", param.low), spec.get("high", param.high)
        _check_value(name, low)
        _check_value(name, high)
        if not low < high:
            raise InputError(f"space: {name}: empty range ({low}..{high}); use 'value' to fix it")
        param = replace(param, low=low, high=high, log=spec.get("log", param.log))
        if param.log and low <= 0:
            raise InputError(f"space: {name}: a log range must be positive")
    if "centre" in spec:
        _check_value(name, spec["centre"])
        if not param.contains(spec["centre"]):
            raise InputError(f"space: {name}: centre {spec['centre']} lies outside its range")
        param = replace(param, centre=spec["centre"])
    elif not param.contains(param.centre):
        param = replace(param, centre=param.nearest(param.centre))
    if "confidence" in spec:
        param = replace(param, confidence=float(spec["confidence"]))
    return param


def build_space(method: str, n_params: float, n_examples: int, overrides: dict | None = None,
                hidden_size: int = 0, epochs: float | None = None) -> dict[str, Param]:
    """The prior space of the method, with the user's overrides applied and checked."""
    space = prior_space(method, n_params, n_examples, hidden_size, epochs)
    overrides = dict(overrides or {})
    if "batch_size" in overrides:  # the learning rate's range follows the batches searched
        space["batch_size"] = _override(space["batch_size"], overrides.pop("batch_size"))
        space["learning_rate"] = learning_rate_param(method, n_params, hidden_size, space["batch_size"])
    for name, spec in overrides.items():
        if name not in space:
            known = ", ".join(space)
            raise InputError(f"space: unknown hyperparameter '{name}' for method {method} (known: {known})")
        space[name] = _override(space[name], spec)
    return space


def suggest(trial, space: dict[str, Param]) -> dict[str, Any]:
    """Draw (or, for an enqueued trial, read back) every parameter of the space."""
    return {name: p.suggest(trial) for name, p in space.items()}


def starting_configs(method: str, space: dict[str, Param], hidden_size: int = 0,
                     overrides: dict | None = None) -> list[dict[str, Any]]:
    """The seeds' starting configurations for the method (learning rate width-corrected
    as the priors are; a centre the user set wins), moved inside the space."""
    mine = {k for k, v in (overrides or {}).items() if not isinstance(v, dict) or "centre" in v or "value" in v}
    configs = []
    for c in priors.STARTING_CONFIGS[method]:
        c = {**c, "learning_rate": c["learning_rate"] * priors.width_factor(hidden_size)}
        c.update({k: space[k].centre for k in mine})
        if "learning_rate" in mine:  # the user's centre, at the config's batch
            c["learning_rate"] = space["learning_rate"].centre_for(space["batch_size"].nearest(c["batch_size"]))
        configs.append(c)
    return [{k: space[k].nearest(v) for k, v in config.items() if k in space} for config in configs]
