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
    """{optimizer step: the keys reported there, in order} of a trial of total_steps.

    Fractions take steps in their order (a later fraction never an earlier step), each rung
    below the whole run a step of its own where the run has room (the step after the
    previous rung's at the earliest). Where a short trial has several fractions on one step,
    the step reports its rungs and its last key, in order, the pruner asked after each: no
    rung is hidden from asha by a later key (asha judges a trial at the highest key it
    reported), and the median and Hyperband pruners see one value per step, as before."""
    rungs = {round(f, 9) for f in rung_fractions(spec)[:-1]}
    judged = {key(spec, f) for f in rungs}
    points: dict[int, list[int]] = {}
    last = last_rung = 0
    for f in eval_fractions(spec):
        step = max(1, round(f * total_steps), last, last_rung + 1 if f in rungs else 0)
        last = step = min(step, total_steps)
        if f in rungs:
            last_rung = step
        keys = points.setdefault(step, [])
        if keys and keys[-1] not in judged:
            keys.pop()  # an earlier non-rung key of the same step: the step reports its last key
        keys.append(key(spec, f))
    return points


def rung_keys(spec) -> list[int]:
    return [key(spec, f) for f in rung_fractions(spec)]


def eval_steps(spec, total_steps: int) -> int:
    """The even evaluation interval of a trial of total_steps, for a plain TrainingArguments."""
    return spec.eval_steps or max(1, total_steps // spec.evals_per_trial)
