"""A learning-rate range test that measures something (000's sketch did not).

The optimizer steps at every learning rate (000's never stepped, so the
weights never moved); the loss is smoothed with a bias-corrected EMA and read
against a log learning-rate axis (000 took the steepest raw slope on a linear
axis, which follows noise); the test stops once the smoothed loss diverges;
the batches come from one iterator (000 rebuilt it every step); and the
model's weights are put back afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class RangeTest:
    """The learning rates tried, the smoothed losses, and the suggestion."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    suggestion: float | None = None
    stopped_early: bool = False


def suggest_lr(lrs: list[float], smoothed: list[float]) -> float:
    """The learning rate where the smoothed loss falls fastest per decade,
    looked for between the EMA's first tenth (still settling) and the loss's
    minimum (past it, training diverges), with slopes taken over a span of
    points so that one noisy batch cannot win."""
    n = len(smoothed)
    start = max(1, n // 10)
    end = min(range(start, n), key=smoothed.__getitem__)
    span = max(1, n // 20)
    candidates = range(start + span, end - span + 1)
    if not candidates:  # no descent to read: the usual "minimum / 10", within the tested range
        return max(lrs[0], lrs[end] / 10)
    def slope(i):
        return (smoothed[i + span] - smoothed[i - span]) / math.log10(lrs[i + span] / lrs[i - span])
    return lrs[min(candidates, key=slope)]


def range_test(model, batches, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100,
               smoothing: float = 0.9, diverge_factor: float = 1.5) -> RangeTest:
    """Train `model` for up to `steps` steps with the learning rate rising
    exponentially from min_lr to max_lr, then restore its weights."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=min_lr, weight_decay=0.0)
    factor = (max_lr / min_lr) ** (1 / max(1, steps - 1))
    result, ema, best = RangeTest(), 0.0, math.inf
    model.train()
    try:
        for step in range(steps):
            lr = min_lr * factor ** step
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = model(**next(batches)).loss
            value = loss.item()
            if not math.isfinite(value):
                result.stopped_early = True
                break
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            ema = smoothing * ema + (1 - smoothing) * value
            smoothed = ema / (1 - smoothing ** (step + 1))
            result.lrs.append(lr)
            result.losses.append(smoothed)
            best = min(best, smoothed)
            if step > 5 and smoothed > diverge_factor * best:
                result.stopped_early = True
                break
    finally:
        with torch.no_grad():
            for p, original in zip(trainable, saved):
                p.copy_(original)
    if len(result.lrs) >= 3:
        result.suggestion = suggest_lr(result.lrs, result.losses)
    return result


def plot(result: RangeTest, path) -> None:
    from workers import plots

    fig, (ax,) = plots.figure(1, 8, 4.5, "learning-rate range test")
    ax.semilogx(result.lrs, result.losses, label="smoothed loss")
    if result.suggestion:
        ax.axvline(result.suggestion, color="red", linestyle="--", label=f"suggested {result.suggestion:.1e}")
    ax.set(xlabel="learning rate (log scale)", ylabel="training loss (EMA)")
    ax.legend()
    fig.savefig(path)


def cycle(data, collator, batch_size: int, seed: int = 0):
    """Endless shuffled batches from one iterator."""
    import random

    rng = random.Random(seed)
    while True:
        order = list(range(len(data)))
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield collator([data[j] for j in order[i:i + batch_size]])


def run_for_spec(spec, steps: int = 100, min_lr: float = 1e-7, max_lr: float = 1.0) -> RangeTest:
    """The range test on the study's own model, method and data, with the
    seeds' starting config for everything but the learning rate."""
    from search.study import space_of
    from spaces.space import starting_configs
    from workers.quiet import quiet_libraries

    quiet_libraries()
    from workers.train import TrialData, build_model

    params = starting_configs(spec.method, space_of(spec), spec.hidden_size)[0]
    data = TrialData(spec)
    batch = min(params["batch_size"], spec.max_micro_batch, len(data.train))
    return range_test(build_model(spec, params), cycle(data.train, data.collator, batch, spec.seed),
                      min_lr, max_lr, steps)


def centre_override(spec, lr: float) -> dict:
    """space_overrides that centre the learning-rate prior on lr, widening its range if needed."""
    from search.study import space_of

    current = space_of(spec)["learning_rate"]
    override = {**spec.space_overrides.get("learning_rate", {}), "centre": lr}
    if lr * 3 > current.high:
        override["high"] = min(1.0, lr * 10)
    if lr / 3 < current.low:
        override["low"] = lr / 10
    return {**spec.space_overrides, "learning_rate": override}
