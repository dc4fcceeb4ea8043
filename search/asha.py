"""Asynchronous successive halving with promotion (ASHA; Li et al., MLSys 2020).

Rungs sit at fractions of a trial's run (search/progress.py: min_fraction x
eta^k, then the whole run). A trial reaching a rung goes on if it is among
the best 1/eta of the configurations that have reached that rung so far;
otherwise it pauses there: it is told PRUNED with its checkpoint kept and
`tunefleet.paused` set. Whenever a worker (or the coordinator) looks for work,
a paused configuration that has since become one of the best 1/eta of its
rung is promoted first, highest rung first: a new trial with the same params
continues from the paused trial's checkpoint (`tunefleet.promoted_from`), so
no step is trained twice and the continued run is the run it would have been.

Brackets hedge against low rungs that mislead (Hyperband; Li et al., JMLR
2018): bracket b's configurations are first judged at rung b, so some start
at the lowest rung, some higher, some run in full. Each bracket is an asha
of its own (its configurations are compared with each other only), and
new configurations are dealt to brackets in Hyperband's proportions, the
brackets interleaved, the first configuration (the starting config) in the
bracket that runs in full. `spec.brackets = 1` is plain asha.

A configuration is the chain of trials that continue one another (resumes
after a lost lease, promotions); `tunefleet.lineage` names its first trial.
Once no new configuration may start, and no trial is complete, running or
queued, the best paused configuration of the highest rung is promoted
anyway: a study always comes back with a complete trial.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import attrs, progress


def lineage(trial) -> int:
    return trial.user_attrs.get(attrs.LINEAGE, trial.number)


def bracket_cycle(spec) -> list[int]:
    """One Hyperband round of new configurations' brackets. Bracket b (of n_rungs - b rungs)
    gets ceil(n_brackets / (n_rungs - b) x eta^(n_rungs - 1 - b)) of them, spread evenly
    over the round, ties to the higher bracket."""
    n_rungs = len(progress.rung_fractions(spec))
    n_brackets = min(spec.brackets or n_rungs, n_rungs)
    slots = []
    for b in range(n_brackets):
        s = n_rungs - 1 - b
        n = math.ceil(n_brackets / (s + 1) * spec.eta ** s)
        slots += [(j / n, -b) for j in range(n)]
    return [-b for _, b in sorted(slots)]


def brackets(trials, spec) -> dict[int, int]:
    """{configuration: its bracket}: the configurations in the order they started, dealt round
    after round of bracket_cycle."""
    cycle = bracket_cycle(spec)
    return {c: cycle[i % len(cycle)] for i, c in enumerate(sorted({lineage(t) for t in trials}))}


def rung_values(trials, key: int, among=None) -> dict[int, float]:
    """{configuration: its eval loss at the rung} over every configuration that reached it
    (only those in `among`, if given)."""
    return {lineage(t): t.intermediate_values[key] for t in trials if key in t.intermediate_values
            and (among is None or lineage(t) in among)}


def peers(trials, spec, config: int) -> set[int]:
    """The configurations of config's bracket."""
    of = brackets(trials, spec)
    return {c for c, b in of.items() if b == of[config]}


def standing(trials, spec, config: int, key: int, loss: float) -> dict[int, float]:
    """The rung's values among config's bracket, config's own loss at it included."""
    values = rung_values(trials, key, peers(trials, spec, config))
    values[config] = loss
    return values


def judged(spec, bracket: int, key: int) -> bool:
    """Whether a configuration of the bracket is judged at the rung at key."""
    keys = progress.rung_keys(spec)
    return key in keys[bracket:-1]


def in_top(values: dict[int, float], config: int, eta: int) -> bool:
    """Among the best len(values) // eta of the rung (none while fewer than eta reached it)."""
    ranked = sorted(values, key=lambda c: (values[c], c))
    return config in ranked[: len(values) // eta]


class AshaPruner(optuna.pruners.BasePruner):
    """Asks a trial at a rung below the last to pause unless it is in the rung's best 1/eta."""

    def __init__(self, spec):
        self.spec = spec

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        key, config = trial.last_step, lineage(trial)
        trials = study.get_trials(deepcopy=False)
        if key is None or not judged(self.spec, brackets(trials, self.spec)[config], key):
            return False
        values = standing(trials, self.spec, config, key, trial.intermediate_values[key])
        return not in_top(values, config, self.spec.eta)


def _latest_by_lineage(trials) -> dict[int, FrozenTrial]:
    latest: dict[int, FrozenTrial] = {}
    for t in trials:
        c = lineage(t)
        if c not in latest or t.number > latest[c].number:
            latest[c] = t
    return latest


def one_per_configuration(trials) -> list[FrozenTrial]:
    """Each configuration once, as a sampler learns from it: its latest finished trial (the
    paused one, or the promotion that continued it), or its running one while none of it has
    finished. A paused trial and its promotion carry the same params: seen twice, they would
    be two contradicting values at one point, and twice the evidence."""
    latest: dict[int, FrozenTrial] = {}
    for t in trials:
        c, held = lineage(t), latest.get(lineage(t))
        if held is None or (t.state.is_finished(), t.number) > (held.state.is_finished(), held.number):
            latest[c] = t
    return sorted(latest.values(), key=lambda t: t.number)


def paused(trials) -> list[FrozenTrial]:
    """Paused trials not continued yet (each the latest trial of its configuration)."""
    return [t for t in _latest_by_lineage(trials).values()
            if t.state == TrialState.PRUNED and attrs.PAUSED in t.user_attrs]


def promotions(trials, spec, configs_spent: bool) -> list[FrozenTrial]:
    """The paused trials to continue now, highest rung first, best first within a rung. With
    configs_spent (no new configuration may start) and nothing complete, running, queued or
    promotable, the best paused trial of the highest rung reached."""
    if spec.pruner != "asha":
        return []
    waiting = paused(trials)
    out = []
    for key in sorted(progress.rung_keys(spec)[:-1], reverse=True):
        here = [t for t in waiting if t.user_attrs[attrs.PAUSED]["rung"] == key]
        values = {c: rung_values(trials, key, peers(trials, spec, c)) for c in {lineage(t) for t in here}}
        out += sorted((t for t in here if in_top(values[lineage(t)], lineage(t), spec.eta)),
                      key=lambda t: values[lineage(t)][lineage(t)])
    busy = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    if waiting and not out and configs_spent and not any(t.state in busy for t in trials):
        top = max(t.user_attrs[attrs.PAUSED]["rung"] for t in waiting)
        out = [min((t for t in waiting if t.user_attrs[attrs.PAUSED]["rung"] == top),
                   key=lambda t: t.intermediate_values[top])]
    return out


def promote(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queues the paused trial's configuration to continue from its checkpoint."""
    rung = trial.user_attrs[attrs.PAUSED]["rung"]
    study.enqueue_trial(trial.params, user_attrs={
        attrs.SOURCE: f"promotion of trial {trial.number} from the rung at {rung}",
        attrs.PROMOTED_FROM: trial.number, attrs.LINEAGE: lineage(trial)})
