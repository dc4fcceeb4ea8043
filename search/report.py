"""What `status`, `best` and `studies` report, as plain dicts (the --json output)."""

from __future__ import annotations

import time
from collections import Counter

import optuna
from optuna.trial import TrialState

from search import asha, attrs, budget, progress, trajectory
from search.views import describe_prune
from search.spec import StudySpec
from search.study import space_of
from spaces import export
from spaces.errors import InputError


def _best(trials) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return min(complete, key=lambda t: t.value) if complete else None


def status(study: optuna.Study, spec: StudySpec) -> dict:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    best = _best(trials)
    now = time.time()
    running = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        worker = t.user_attrs.get(attrs.WORKER, {})
        running.append({
            "number": t.number, "host": worker.get("host"), "pid": worker.get("pid"),
            "running_s": round(now - worker["claimed_at"], 1) if "claimed_at" in worker else None,
            "last_step": t.last_step, "last_value": t.intermediate_values.get(t.last_step),
        })
    pruned = [{"number": t.number, **t.user_attrs.get(attrs.PRUNE, {"detector": "unknown"})}
              for t in trials if t.state == TrialState.PRUNED and attrs.PAUSED not in t.user_attrs]
    return {
        "study": study.study_name, "method": spec.method, "n_trials": spec.n_trials,
        "configurations": budget.configurations(trials),
        "counts": {s.name: counts.get(s.name, 0) for s in TrialState},
        "paused": len(asha.paused(trials)),
        "compute": budget.compute(trials), "max_tokens": spec.max_tokens,
        "best": {"number": best.number, "value": best.value, "params": best.params} if best else None,
        "running": running, "pruned": pruned,
        "stopped": (study.user_attrs.get(attrs.STOP) or {}).get("reason"),
        "progress": trajectory.summary(trials, spec),
    }


def best(study: optuna.Study, spec: StudySpec) -> dict:
    trial = _best(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if trial is None:
        raise InputError(f"study '{study.study_name}' has no complete trial yet")
    # Params of the space in its order; a trial may hold none outside it.
    params = {name: trial.params[name] for name in space_of(spec)}
    steps = progress.trial_steps(spec, params["batch_size"])
    return {
        "study": study.study_name, "number": trial.number, "value": trial.value, "params": params,
        "training_arguments": export.training_arguments(params, spec.method, steps, progress.eval_steps(spec, steps),
                                                        spec.max_micro_batch, spec.seed),
        "peft_config": export.peft_config(params, spec.method),
        "quantization_config": export.quantization_config(spec.method),
    }


def ended(trial) -> str:
    """Why a trial ended (or that it has not), in one line."""
    a = trial.user_attrs
    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING:
        return "queued: " + a.get(attrs.SOURCE, "")
    if attrs.PAUSED in a:
        return f"paused at the rung at step {a[attrs.PAUSED]['step']}"
    if trial.state == TrialState.PRUNED:
        return "pruned " + describe_prune(a.get(attrs.PRUNE, {}))
    if trial.state == TrialState.FAIL:
        return "failed: " + str(a.get(attrs.ERROR, "unknown error"))
    if attrs.EARLY_STOP in a:
        return "stopped early " + describe_prune(a[attrs.EARLY_STOP])
    return "ran in full"


def trials(study: optuna.Study, spec: StudySpec) -> list[dict]:
    return [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "cost": t.user_attrs.get(attrs.COST, {}), "configuration": asha.lineage(t), "ended": ended(t)}
            for t in study.get_trials(deepcopy=False)]


def studies(storage) -> list[dict]:
    rows = []
    for s in storage.get_all_studies():
        trials = storage.get_all_trials(storage.get_study_id_from_name(s.study_name), deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        best_trial = _best(trials)
        spec = s.user_attrs.get(attrs.SPEC, {})
        rows.append({
            "name": s.study_name, "method": spec.get("method"), "n_trials": spec.get("n_trials"),
            "complete": counts.get("COMPLETE", 0), "pruned": counts.get("PRUNED", 0),
            "running": counts.get("RUNNING", 0), "best_value": best_trial.value if best_trial else None,
        })
    return rows
