"""How long a trial runs and where it is judged, as fractions of its run.

A trial is sized in data (the spec's epochs: its optimizer steps follow from
the training split and its effective batch) or, if the spec says so, in
optimizer steps. Either way its evaluations sit at fixed fractions of its run,
and each is reported to Optuna under the same key in every trial: the
fraction times the study's `resource` (examples with epochs, steps with
max_steps), so trials of different batch sizes meet at the same keys and the
pruners compare like with like. The multi-fidelity rungs are some of those
fractions (min_fraction x eta^k, up to the whole run).
"""

from __future__ import annotations

import math


def n_train(spec) -> int:
    """Training examples after the held-out split (as workers.data splits them)."""
    if spec.eval_dataset:
        return spec.n_examples
    n_eval = max(1, min(spec.max_eval_examples, round(spec.n_examples * spec.eval_fraction)))
    return max(1, spec.n_examples - n_eval)


def trial_steps(spec, batch_size: int) -> int:
    """Optimizer steps of a trial at this effective batch."""
    if spec.max_steps:
        return spec.max_steps
    return max(1, math.ceil(spec.epochs * n_train(spec) / batch_size))


def resource(spec) -> int:
    """The key of a trial's last evaluation: examples of its run (epochs) or its steps (max_steps)."""
    return spec.max_steps or max(1, round(spec.epochs * n_train(spec)))


def rung_fractions(spec) -> list[float]:
    """Where asha judges a trial: min_fraction x eta^k below 1, then 1 (empty without asha)."""
    if spec.pruner != "asha":
        return []
    out, f = [], spec.min_fraction
    while f < 1 - 1e-9:
        out.append(f)
        f *= spec.eta
    return out + [1.0]


def eval_fractions(spec) -> list[float]:
    """Every evaluation of a trial, as fractions of its run: evenly spaced, plus the rungs."""
    if spec.max_steps:
        even = [k * spec.eval_steps / spec.max_steps for k in range(1, spec.max_steps // spec.eval_steps + 1)]
    else:
        even = [k / spec.evals_per_trial for k in range(1, spec.evals_per_trial + 1)]
    return sorted(set(round(f, 9) for f in even + rung_fractions(spec) + [1.0]))


def key(spec, fraction: float) -> int:
    return max(1, round(fraction * resource(spec)))


def eval_points(spec, total_steps: int) -> dict[int, list[int]]:
    """{optimizer step: the reporting keys evaluated there, in order} of a trial of total_steps.

    Every key is reported: a short trial can have several fractions on one step, and that
    evaluation is reported under each of them in turn. Each rung below the whole run gets a
    step of its own where the run has room (the step after the previous rung's at the
    earliest), so that no later key on the same step hides a rung from the pruner."""
    steps: dict[float, int] = {}
    previous = 0
    for f in (round(f, 9) for f in rung_fractions(spec)[:-1]):
        previous = steps[f] = min(total_steps, max(1, round(f * total_steps), previous + 1))
    for f in eval_fractions(spec):
        steps.setdefault(f, max(1, round(f * total_steps)))
    points: dict[int, list[int]] = {}
    for f in sorted(steps):
        points.setdefault(steps[f], []).append(key(spec, f))
    return {step: sorted(set(keys)) for step, keys in sorted(points.items())}


def rung_keys(spec) -> list[int]:
    return [key(spec, f) for f in rung_fractions(spec)]


def eval_steps(spec, total_steps: int) -> int:
    """The even evaluation interval of a trial of total_steps, for a plain TrainingArguments."""
    return spec.eval_steps or max(1, total_steps // spec.evals_per_trial)
