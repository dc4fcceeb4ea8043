"""`tunefleet demo`: a real study, end to end, on this machine and nothing else.

Build (once) a tiny causal LM and a dataset from the docstrings of Python's
standard library; create a LoRA study on the embedded storage; start local
`tunefleet worker` processes; follow the trials as they finish.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search import attrs, budget
from search.report import best as best_report
from search.views import describe_prune
from search.study import create, load
from workers.inputs import spec_from_inputs
from storage import backend


def _line(trial) -> str:
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number:>2} complete  eval loss {trial.value:.4f}  lr={trial.params['learning_rate']:.2e} batch={trial.params['batch_size']}"
    if attrs.PAUSED in trial.user_attrs:
        evidence = trial.user_attrs[attrs.PRUNE]["evidence"]
        return (f"trial {trial.number:>2} paused    at its rung (rank {evidence['rank']} of {evidence['reached']}, "
                f"eval loss {evidence['loss']:.4f}); may be promoted")
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number:>2} pruned    {describe_prune(trial.user_attrs.get(attrs.PRUNE, {}))}"
    return f"trial {trial.number:>2} {trial.state.name.lower()}  {trial.user_attrs.get(attrs.ERROR, '')}"


def _follow(study, workers, started: float) -> list:
    """Print each trial as it ends, until every worker has exited; all trials."""
    shown: set[int] = set()
    while True:
        alive = any(w.poll() is None for w in workers)
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t.state.is_finished() and t.number not in shown:
                shown.add(t.number)
                print(f"[{time.time() - started:5.0f}s] {_line(t)}", flush=True)
        if not alive:
            return trials
        time.sleep(1)


def run(n_workers: int, n_trials: int, epochs: float, cache: Path, url: str | None) -> int:
    started = time.time()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; nothing is fetched
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"building the tiny model and dataset under {cache} (once)...", flush=True)
    from workers.tiny import build_assets

    model_dir, dataset = build_assets(cache)
    where = backend(url)
    storage = where.open()
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    spec = spec_from_inputs(str(model_dir.absolute()), str(dataset.absolute()), "lora", n_trials=n_trials,
                            epochs=epochs, seq_len=96)
    create(storage, name, spec)
    print(f"study {name}: LoRA on {spec.n_examples} examples, {n_trials} configurations of {epochs:g} epochs "
          f"(asha: paused at rungs, the best promoted), {n_workers} workers; storage {where.shown}", flush=True)
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    env = {**os.environ, "TUNEFLEET_STORAGE": where.url}  # not on the command line, where ps would show a password
    logs = [open(cache / f"{name}-worker{i}.log", "w") for i in range(n_workers)]
    workers = [subprocess.Popen([sys.executable, "-m", "search.cli", "worker", name, "--threads", str(threads)],
                                env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    study, _ = load(storage, name)
    try:
        trials = _follow(study, workers, started)
    except KeyboardInterrupt:
        print("stopping the workers: each ends its trial cleanly and queues it again...", flush=True)
        for w in workers:
            w.wait()
        print(f"stopped; continue with: tunefleet worker {name}")
        return 130
    finally:
        for log in logs:
            log.close()
    if any(w.returncode for w in workers):
        print(f"a worker failed; see its log under {cache}", file=sys.stderr)
        return 1
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    paused = sum(attrs.PAUSED in t.user_attrs for t in trials)
    best = best_report(study, spec)
    compute = budget.compute(trials)
    print(f"\n{len(trials)} trials in {time.time() - started:.0f} s: {counts[TrialState.COMPLETE]} complete, "
          f"{paused} paused at a rung, {counts[TrialState.PRUNED] - paused} pruned; "
          f"{compute['tokens']:,} training tokens")
    print(f"best: trial {best['number']}, eval loss {best['value']:.4f}")
    for k, v in best["params"].items():
        print(f"  {k} = {v}")
    shown = "" if "TUNEFLEET_STORAGE" in os.environ or where == backend(None) else f" --storage '{where.shown}'"
    print(f"\nsee every trial, its curve and why it ended: tunefleet dashboard{shown}")
    print(f"full config as JSON: tunefleet best {name}{shown}")
    return 0
