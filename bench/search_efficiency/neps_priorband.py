"""(e) NePS PriorBand (Mallik et al., NeurIPS 2023) driving tunefleet's own training.

The field's reference for prior-guided multi-fidelity search, through NePS's
ask-and-tell interface (neural-pipeline-search 0.17.0, the bench extra; see
bench/README.md). It gets what tunefleet's default gets: the same prior space
(each hyperparameter's range, centre and confidence, the learning rate's centre
at the batch prior's centre: NePS priors cannot depend on another parameter),
the same fidelity (a fraction of the trial's run, rungs at 1/9, 1/3 and 1 with
eta 3) and the same trials (tunefleet's worker code, detectors off).

A NePS promotion ("3_rung_1" after "3_rung_0") continues from the checkpoint of
the trial it follows, exactly as an asha promotion does; a new configuration
that Hyperband starts at a higher rung trains from scratch to that fidelity.
Each NePS trial is an Optuna trial of a scratch study whose pruner stops it at
its fidelity (the paused trial keeps its checkpoint); its objective is the eval
loss there, its cost the tokens it trained.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from search import attrs, progress
from search.study import space_of
from spaces.space import suggest
from storage import backend, open_storage
from storage import optuna_compat as compat

ETA = 3
MIN_FRACTION = 1 / 9
STOP_AT = "bench.stop_at"  # user attr: the key at which this trial's fidelity is reached


class StopAt(optuna.pruners.BasePruner):
    """Stops a trial once it reported at its fidelity's key (a full-fidelity trial runs to the end)."""

    def prune(self, study, trial) -> bool:
        stop = trial.user_attrs.get(STOP_AT)
        return stop is not None and trial.last_step is not None and trial.last_step >= stop


def _confidence(c: float) -> str:
    return "high" if c >= 0.75 else "medium" if c >= 0.5 else "low"


def pipeline_space(space: dict):
    """The tunefleet prior space as a NePS PipelineSpace, plus the fidelity."""
    import neps

    fields = {}
    for name, p in space.items():
        if p.choices is not None:
            if len(p.choices) == 1:
                continue  # fixed: passed through
            prior = list(p.choices).index(p.centre) if p.centre in p.choices else None
            fields[name] = neps.Categorical(choices=tuple(p.choices), prior=prior,
                                            prior_confidence=_confidence(p.confidence)) \
                if prior is not None else neps.Categorical(choices=tuple(p.choices))
        else:
            fields[name] = neps.Float(lower=p.low, upper=p.high, log=p.log, prior=p.centre,
                                      prior_confidence=_confidence(p.confidence))
    fields["progress"] = neps.FloatFidelity(MIN_FRACTION, 1.0)
    return type("TunefleetSpace", (neps.PipelineSpace,), fields)()


class _Rng:
    """NePS samples from the global RNGs, which training reseeds: keep NePS's own state apart."""

    def __init__(self, seed: int):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.save()

    def save(self):
        self.state = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    def restore(self):
        random.setstate(self.state[0])
        np.random.set_state(self.state[1])
        torch.set_rng_state(self.state[2])


def run(problem, seed: int, tc, budget: int) -> tuple[list[dict], dict]:
    import neps

    from bench.search_efficiency.methods import NO_DETECTORS, base_spec, record, resident
    from workers.trial_outcome import report
    from workers.trial_run import train

    spec = base_spec(problem, tc, pruner="asha", eta=ETA, min_fraction=MIN_FRACTION, detectors=NO_DETECTORS,
                     retry_diverged=False)
    space = space_of(spec)
    fixed = {n: p.choices[0] for n, p in space.items() if p.choices is not None and len(p.choices) == 1}
    rng = _Rng(seed)
    optimizer = neps.algorithms.priorband(pipeline_space(space), eta=ETA, sample_prior_first=True)
    ask_tell = neps.AskAndTell(optimizer)
    rng.save()
    records, used = [], 0
    with tempfile.TemporaryDirectory(prefix="tunefleet-bench-neps-") as tmp:
        url = f"journal:{Path(tmp) / 'journal.log'}"
        storage = open_storage(url)
        study = optuna.create_study(study_name="neps", storage=storage, direction="minimize", pruner=StopAt())
        store, warm = backend(url).artifacts(storage), resident(spec)
        numbers: dict[str, int] = {}  # NePS trial id -> Optuna trial number
        while used < budget:
            rng.restore()
            neps_trial = ask_tell.ask()
            rng.save()
            config = dict(neps_trial.config)
            fraction = float(config.pop("progress"))
            params = {**config, **fixed}
            previous = neps_trial.metadata.previous_trial_id
            user_attrs = {STOP_AT: progress.key(spec, fraction) if fraction < 1 - 1e-6 else None,
                          attrs.SOURCE: f"neps {neps_trial.metadata.id}"}
            if previous is not None:
                parent = study.get_trials(deepcopy=False)[numbers[previous]]
                user_attrs.update({attrs.PROMOTED_FROM: parent.number,
                                   attrs.LINEAGE: parent.user_attrs.get(attrs.LINEAGE, parent.number)})
            study.enqueue_trial(params, user_attrs=user_attrs)
            trial = study.ask()
            assert trial.user_attrs[attrs.SOURCE] == user_attrs[attrs.SOURCE], "a trial NePS did not ask for"
            numbers[neps_trial.metadata.id] = trial.number
            t0 = time.time()
            run_ = train(trial, suggest(trial, space), spec, warm, store, Path(tmp), should_stop=lambda: False)
            report(study, trial, params, run_, store)
            frozen = storage.get_trial(compat.trial_id(trial))
            tokens = run_.cost["tokens"]
            used += tokens
            values = frozen.intermediate_values
            loss = values[max(values)] if values else float("inf")
            ask_tell.tell(neps_trial, {"objective_to_minimize": loss, "cost": tokens})
            records.append(record(frozen, params, tokens, used, run_, time.time() - t0))
    how = {"search": f"neps {_version()} priorband(eta={ETA}, sample_prior_first=True, base='hyperband') through "
                     "neps.AskAndTell; fidelity = fraction of the run, 1/9 .. 1",
           "priors": "tunefleet's prior space (centres, confidences low/medium/high)", "detectors": "off"}
    return records, how


def _version() -> str:
    from importlib.metadata import version

    return version("neural-pipeline-search")
