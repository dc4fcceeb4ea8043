"""(e) NePS PriorBand on the simulated fleet, asked and told as the real benchmark does
(bench/search_efficiency/neps_priorband.py): the same PipelineSpace from tunefleet's prior
space, the same fidelity (a fraction of the run, rungs 1/9, 1/3, 1), each NePS trial an
Optuna trial of a scratch study whose StopAt pruner pauses it at its fidelity, a NePS
promotion continuing the trial it follows. Several workers ask before the first tells,
as NePS's ask-and-tell allows."""

from __future__ import annotations

import random

import numpy as np
import optuna

from bench.search_efficiency.methods import NO_DETECTORS, base_spec
from bench.search_efficiency.neps_priorband import ETA, MIN_FRACTION, STOP_AT, StopAt, pipeline_space
from bench.search_replay.trial import ReplayTrial
from search import attrs, budget, progress
from search.study import space_of
from spaces.space import suggest


class NepsSearch:
    def __init__(self, problem, tc, table, seed: int, tokens: int):
        import neps

        self.spec = base_spec(problem, tc, pruner="asha", eta=ETA, min_fraction=MIN_FRACTION, detectors=NO_DETECTORS,
                     retry_diverged=False)
        self.space = space_of(self.spec)
        self.fixed = {n: p.choices[0] for n, p in self.space.items() if p.choices is not None and len(p.choices) == 1}
        self.table, self.tokens = table, tokens
        random.seed(seed)
        np.random.seed(seed)
        import torch

        torch.manual_seed(seed)
        self.ask_tell = neps.AskAndTell(neps.algorithms.priorband(pipeline_space(self.space), eta=ETA,
                                                                  sample_prior_first=True))
        self.study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="minimize",
                                         pruner=StopAt())
        self.numbers: dict[str, int] = {}  # NePS trial id -> Optuna trial number
        self.asked: dict[int, object] = {}  # Optuna trial number -> NePS trial

    def take(self):
        trials = self.study.get_trials(deepcopy=False)
        if budget.compute(trials)["tokens"] >= self.tokens:
            return None
        neps_trial = self.ask_tell.ask()
        config = dict(neps_trial.config)
        fraction = float(config.pop("progress"))
        params = {**config, **self.fixed}
        user_attrs = {STOP_AT: progress.key(self.spec, fraction) if fraction < 1 - 1e-6 else None,
                      attrs.SOURCE: f"neps {neps_trial.metadata.id}"}
        previous = neps_trial.metadata.previous_trial_id
        if previous is not None:
            parent = trials[self.numbers[previous]]
            user_attrs.update({attrs.PROMOTED_FROM: parent.number,
                               attrs.LINEAGE: parent.user_attrs.get(attrs.LINEAGE, parent.number)})
        self.study.enqueue_trial(params, user_attrs=user_attrs)
        trial = self.study.ask()
        assert trial.user_attrs[attrs.SOURCE] == user_attrs[attrs.SOURCE], "a trial NePS did not ask for"
        self.numbers[neps_trial.metadata.id] = trial.number
        self.asked[trial.number] = neps_trial
        params = suggest(trial, self.space)
        return ReplayTrial(self.study, trial, params, self.spec, self.table.lookup(params))

    def ended(self, flight: ReplayTrial) -> None:
        frozen = self.study.get_trials(deepcopy=False)[flight.trial.number]
        values = frozen.intermediate_values
        loss = values[max(values)] if values else float("inf")
        tokens = (frozen.user_attrs.get(attrs.COST) or {}).get("tokens", 0)
        self.ask_tell.tell(self.asked.pop(flight.trial.number), {"objective_to_minimize": loss, "cost": tokens})
