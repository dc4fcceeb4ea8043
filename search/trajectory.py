"""A search's progress as its users judge it: the best eval loss against the training tokens
spent, what the configurations are doing, and how much of the budget is left (`tunefleet
status`, and the study's note and plot in optuna-dashboard)."""

from __future__ import annotations

from optuna.trial import TrialState

from search import asha, attrs, budget, clock

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def best_by_tokens(trials) -> list[tuple[int, float]]:
    """(tokens spent when a trial ended, the best complete trial's eval loss then), one point per
    improvement, trials in the order they ended; the tokens count every trial ended by then."""
    ended = sorted((t for t in trials if t.state in FINISHED and clock.ended(t) is not None),
                   key=lambda t: (clock.ended(t), t.number))
    points, spent, best = [], 0, None
    for t in ended:
        spent += (t.user_attrs.get(attrs.COST) or {}).get("tokens", 0)
        if t.state == TrialState.COMPLETE and t.value is not None and (best is None or t.value < best):
            best = t.value
            points.append((spent, best))
    return points


def configurations(trials) -> dict[str, int]:
    """Configurations by what their latest trial is doing: running, queued, paused at a rung,
    complete, or ended otherwise (pruned by a detector, infeasible, failed)."""
    out = {"running": 0, "queued": 0, "paused": 0, "complete": 0, "ended": 0}
    for t in asha.one_per_configuration(trials):
        if t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.WAITING:
            out["queued"] += 1
        elif t.state == TrialState.PRUNED and attrs.PAUSED in t.user_attrs:
            out["paused"] += 1
        elif t.state == TrialState.COMPLETE:
            out["complete"] += 1
        else:
            out["ended"] += 1
    return out


def summary(trials, spec) -> dict:
    """The curve, the configurations and the budget left (tokens where the study has a token
    budget, configurations always)."""
    tokens = budget.compute(trials)["tokens"]
    left = {"configurations": max(0, budget.room(spec, trials))}
    if spec.max_tokens:
        left["tokens"] = max(0, spec.max_tokens - tokens)
        left["share"] = round(left["tokens"] / spec.max_tokens, 4)
    return {"best_by_tokens": best_by_tokens(trials), "configurations": configurations(trials),
            "tokens": tokens, "left": left}
