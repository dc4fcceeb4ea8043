"""Learning-curve tables recorded from real fine-tuning, for the replay.

    python -m bench.search_replay.record                 # every problem; resumes, skips what is recorded
    python -m bench.search_replay.record --problems docstrings-lora --configs 64 --jobs 2

Each problem of bench/search_efficiency/problems.py trains configurations in full
through tunefleet's own trial code (workers.trial_run.attempt: the resident base,
the Trainer as workers.train builds it, the PruningCallback evaluating at the
trial's points) with the detectors and the pruner off, so that the whole run is
known. Configurations: a scrambled Sobol sample of the benchmark's wide space
(spaces' ranges, the learning rate over 1e-6..1, the batch over the plain and the
prior choices), the prior's centre, the seeds' starting configs and the
learning-rate sweep of the starting config (the "truth"); the first REPEATS Sobol
points again under training seeds 1 and 2 (the same data split) to measure noise.

Per configuration and seed, per optimizer step: the train loss, the gradient norm
and the cumulative non-padding training tokens (the Trainer logs every step);
the eval loss at every step any replayed method evaluates at (search/progress.py's
points of the default asha, of asha down to 1/27 of the run, and of every tenth),
with the seconds trained by then; the run's wall seconds; the default detectors'
first verdicts (for the record: the replay runs the real detectors on the series
with each method's thresholds). Every detector's threshold is lifted while
recording (bench/search_efficiency/methods.py's NO_DETECTORS), so a run ends
early only at a non-finite loss or gradient norm, as any run would.

Tables: bench/search_replay/tables/<problem>.jsonl.gz, one JSON line per run after
a header line naming the recipe; a table whose recipe differs is recorded again.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import gzip
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

from bench.search_efficiency import problems as problems_mod
from bench.search_efficiency.methods import NO_DETECTORS, PLAIN_BATCH, TrialConfig, base_spec
from search import progress

HERE = Path(__file__).resolve().parent
TABLES = HERE / "tables"
VERSION = 2
SOBOL = 256  # Sobol points per problem (a power of two keeps the sample balanced)
REPEATS = 32  # of them, trained again under training seeds 1 and 2
WIDE_LR = (1e-6, 1.0)  # every learning rate any replayed method proposes (the 30x-off priors reach 1.0)
# Asha as the default runs it and down to 1/27 of a run; every tenth (median, hyperband): what the
# replay's methods evaluate at.
RECORDED_SPECS = ({"pruner": "asha"}, {"pruner": "asha", "min_fraction": 1 / 27}, {"pruner": "median"})


def trial_config(problem: str) -> TrialConfig:
    """What every trial of the problem gets (the real benchmark's full preset)."""
    return TrialConfig(epochs=problems_mod.EPOCHS[problem])


def wide_space(problem, tc: TrialConfig) -> dict:
    """The benchmark's wide space: the problem's prior space (spaces/), the batch over its
    choices and the plain baselines', the learning rate over WIDE_LR."""
    from search.study import space_of

    space = dict(space_of(base_spec(problem, tc)))
    batches = tuple(sorted(set(space["batch_size"].choices) | set(PLAIN_BATCH)))
    space["batch_size"] = dataclasses.replace(space["batch_size"], choices=batches)
    space["learning_rate"] = dataclasses.replace(space["learning_rate"], low=WIDE_LR[0], high=WIDE_LR[1])
    return space


def recording_points(problem, tc: TrialConfig, total_steps: int) -> list[int]:
    """Every step a replayed method evaluates a trial of total_steps at."""
    steps: set[int] = set()
    for options in RECORDED_SPECS:
        steps |= set(progress.eval_points(base_spec(problem, tc, **options), total_steps))
    return sorted(steps)


def configurations(problem, tc: TrialConfig) -> list[tuple[str, dict, int]]:
    """(id, params, training seed) of every run of the problem's table."""
    from scipy.stats import qmc

    from search.study import space_of
    from spaces.space import starting_configs

    space = wide_space(problem, tc)
    names = list(space)
    runs = []
    for i, u in enumerate(qmc.Sobol(len(names), scramble=True, seed=0).random(SOBOL)):
        params = {name: _from_unit(space[name], x) for name, x in zip(names, u)}
        runs += [(f"sobol-{i}", params, 0)] + ([(f"sobol-{i}", params, s) for s in (1, 2)] if i < REPEATS else [])
    prior = space_of(base_spec(problem, tc))
    centre = {name: p.centre for name, p in prior.items()}
    centre["learning_rate"] = prior["learning_rate"].centre_for(centre["batch_size"])
    runs.append(("prior-centre", centre, 0))
    starts = starting_configs(problem.method, prior, problem.hidden_size)
    runs += [(f"start-{i}", c, 0) for i, c in enumerate(starts)]
    runs += [(f"sweep-{lr:g}", {**starts[0], "learning_rate": lr}, 0) for lr in problems_mod.SWEEP_LRS]
    return runs


def _from_unit(param, x: float):
    if param.choices is not None:
        return param.choices[min(int(x * len(param.choices)), len(param.choices) - 1)]
    if param.log:
        return float(math.exp(math.log(param.low) + x * (math.log(param.high) - math.log(param.low))))
    return float(param.low + x * (param.high - param.low))


def recipe(problem, tc: TrialConfig) -> dict:
    """What the table's runs depend on: a table recorded under another recipe is stale. Paths are
    relative to the repository, so that a table recorded in one checkout holds in another."""
    root = HERE.parent.parent
    where = {k: Path(getattr(problem, k)).resolve().relative_to(root).as_posix() for k in ("model_dir", "dataset")}
    return {"version": VERSION, "problem": {**dataclasses.asdict(problem), **where},
            "trial_config": dataclasses.asdict(tc),
            "sobol": SOBOL, "repeats": REPEATS, "wide_lr": list(WIDE_LR), "specs": [str(s) for s in RECORDED_SPECS],
            "sweep": problems_mod.SWEEP_LRS}


# ---- one run -----------------------------------------------------------------------------------------


def record_run(problem, tc: TrialConfig, run_id: str, params: dict, seed: int) -> dict:
    """Trains one configuration of the problem in full under training seed `seed` (the data
    split of seed 0), evaluating wherever a replayed method evaluates."""
    from bench.search_efficiency.methods import _quiet, resident

    _quiet()
    spec = base_spec(problem, tc, pruner="none", detectors=NO_DETECTORS)
    warm = resident(spec)  # data split and base of seed 0, whatever the training seed
    total = progress.trial_steps(spec, params["batch_size"])
    return record(dataclasses.replace(spec, seed=seed), warm, run_id, params, recording_points(problem, tc, total))


def record(spec, warm, run_id: str, params: dict, points: list[int]) -> dict:
    """One run of `params` to its end on the resident base through tunefleet's trial code
    (workers.trial_run.attempt), evaluated at `points`; the spec's detectors and pruner should
    be off, so that the run is whole. Its series, as the table stores them."""
    import tempfile

    import optuna
    from transformers import TrainerCallback

    from spaces.export import split_batch
    from workers.callback import PruningCallback
    from workers.trial_run import Plan, attempt

    total = progress.trial_steps(spec, params["batch_size"])
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial(params)
    trial = study.ask()
    callback = PruningCallback(trial, spec, total)
    callback.points = {step: [step] for step in points}  # evaluate at every recorded point
    series = {"loss": [], "grad_norm": [], "tokens": []}
    trained: dict[int, float] = {}  # seconds in training steps by each evaluation (evaluations not counted)

    class Record(TrainerCallback):
        """Per step: tokens so far, train loss, gradient norm; seconds trained by each evaluation;
        no checkpoints (nothing resumes)."""

        def __init__(self):
            self.seconds, self.since = 0.0, None

        def on_step_begin(self, args, state, control, **kwargs):
            self.since = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self.since
            control.should_save = False
            series["tokens"].append(int(state.num_input_tokens_seen))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                series["loss"].append(_round(logs["loss"]))
                series["grad_norm"].append(_round(logs.get("grad_norm", float("nan"))))

        def on_evaluate(self, args, state, control, **kwargs):
            control.should_save = False
            trained[state.global_step] = round(self.seconds, 3)

    micro = split_batch(params["batch_size"], spec.max_micro_batch)[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tunefleet-record-") as tmp:
        attempt(Plan(trial.number, params, micro, total, tmp, None), spec, warm, [callback, Record()])
    seconds = time.perf_counter() - started
    # A non-finite loss ends any run (the detectors' one rule without a threshold): the run
    # stops there, and so does its replay.
    ended = len(series["loss"])
    assert ended == len(series["tokens"]) and (ended == total or callback.verdict is not None)
    evals = {step: callback.eval_losses.get(step, float("nan")) for step in points if step <= ended}
    return {"id": run_id, "seed": spec.seed, "params": params, "steps": total, **series,
            "eval": [[s, _round(v), trained.get(s)] for s, v in sorted(evals.items())], "seconds": round(seconds, 2),
            "verdicts": default_verdicts(series, evals)}


def _round(x) -> float:
    x = float(x)
    return float(f"{x:.6g}") if math.isfinite(x) else x


def default_verdicts(series: dict, evals: dict) -> dict:
    """{detector: the step of its first verdict} under the default thresholds, over the run
    (for the record: the replay feeds the series to the real detectors with each method's own)."""
    from search.spec import Detectors
    from workers.detectors import (DivergenceDetector, GradientExplosionDetector, GradientVanishingDetector,
                                   OverfittingDetector, PlateauDetector)

    d = Detectors()
    divergence = DivergenceDetector(d.divergence_ratio, d.divergence_rise, d.divergence_patience)
    explosion = GradientExplosionDetector(d.explosion_ratio, d.explosion_patience)
    vanishing = GradientVanishingDetector(d.vanishing_ratio, d.vanishing_patience)
    plateau, overfitting = PlateauDetector(d.plateau_window, d.plateau_min_improvement), \
        OverfittingDetector(d.overfit_ratio, d.overfit_gap, d.overfit_patience)
    out: dict = {}

    def note(verdict):
        if verdict is not None:
            out.setdefault(verdict.detector, verdict.step)

    for step, (loss, norm) in enumerate(zip(series["loss"], series["grad_norm"]), start=1):
        overfitting.add_train_loss(loss)
        note(divergence.update(step, loss))
        if math.isfinite(norm):
            note(explosion.update(step, norm))
            note(vanishing.update(step, norm))
        if step in evals and math.isfinite(evals[step]):
            note(plateau.update(step, evals[step]))
            note(overfitting.update(step, evals[step]))
    return out


# ---- tables ------------------------------------------------------------------------------------------


def table_path(name: str, tables: Path = TABLES) -> Path:
    return tables / f"{name}.jsonl.gz"


def read_table(name: str, tables: Path = TABLES) -> tuple[dict, list[dict]]:
    """(header: the recipe and the surrogate's stored fit, runs) of a recorded table."""
    with gzip.open(table_path(name, tables), "rt") as f:
        header, *runs = (json.loads(line) for line in f if line.strip())
    return header, runs


def _partial(name: str, tables: Path) -> Path:
    return tables / f"{name}.partial.jsonl"


def _recorded(problem, tc, tables: Path) -> dict[tuple[str, int], dict]:
    """Runs already recorded under this recipe (a whole table, or a partial one)."""
    wanted, runs = recipe(problem, tc), []
    if table_path(problem.name, tables).is_file():
        header, runs = read_table(problem.name, tables)
        if header["recipe"] != wanted:
            runs = []
    partial = _partial(problem.name, tables)
    if partial.is_file():
        header, *rest = (json.loads(x) for x in partial.read_text().splitlines() if x.strip())
        if header.get("recipe") == wanted:
            runs += rest
    return {(r["id"], r["seed"]): r for r in runs}


def _write_table(problem, tc, runs: dict, tables: Path, fitted: dict | None = None) -> None:
    """The table, with the surrogate's fit and fidelity (bench/search_replay/table.py) in its header,
    fitted again unless `fitted` is of the current version."""
    from bench.search_replay.table import Table

    from bench.search_efficiency.methods import full_trial_tokens

    order = sorted(runs.values(), key=lambda r: (r["id"], r["seed"]))
    surrogate = Table(order, wide_space(problem, tc), fitted).surrogate()
    # The budget's unit, as the real benchmark counts it (an epoch's tokens times the epochs).
    header = {"recipe": recipe(problem, tc), "surrogate": surrogate, "full_trial_tokens": full_trial_tokens(problem, tc)}
    with gzip.open(table_path(problem.name, tables), "wt", compresslevel=9) as f:
        f.write(json.dumps(header) + "\n")
        for r in order:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    _partial(problem.name, tables).unlink(missing_ok=True)


def refit(name: str, tables: Path = TABLES) -> dict:
    """Fits a recorded table's surrogate again and stores it (the runs unchanged); its fidelity."""
    from bench.search_replay.table import Table

    header, runs = read_table(name, tables)
    problem = problems_mod.Problem(**header["recipe"]["problem"])
    tc = TrialConfig(**header["recipe"]["trial_config"])
    header["surrogate"] = Table(runs, wide_space(problem, tc)).surrogate()
    with gzip.open(table_path(name, tables), "wt", compresslevel=9) as f:
        f.write(json.dumps(header) + "\n")
        for r in runs:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    return header["surrogate"]["fidelity"]


def _init(threads: int) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(threads)


def _job(problem, tc, run_id, params, seed):
    return record_run(problem, tc, run_id, params, seed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.search_replay.record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default=",".join(problems_mod.PROBLEMS), help="comma-separated")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one process each (default 2)")
    p.add_argument("--limit", type=int, default=0, help="record at most this many runs now (0: all)")
    p.add_argument("--tables", type=Path, default=TABLES)
    p.add_argument("--refit", action="store_true", help="only fit the surrogate of the recorded tables again "
                   "(after a change to bench/search_replay/table.py), building nothing")
    args = p.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    names = [x for x in args.problems.split(",") if x]
    for name in names:
        if name not in problems_mod.PROBLEMS:
            p.error(f"unknown problem '{name}' (choose from {', '.join(problems_mod.PROBLEMS)})")
    if args.refit:
        for name in names:
            fidelity = refit(name, args.tables)
            print(f"{table_path(name, args.tables)}: surrogate k={fidelity['k']}, out-of-fold Spearman "
                  f"{fidelity['surrogate_spearman']:.3f}", flush=True)
        return 0
    args.tables.mkdir(parents=True, exist_ok=True)
    started = time.time()
    probs = {name: problems_mod.build(name) for name in names}
    tcs = {name: trial_config(name) for name in names}
    done = {name: _recorded(probs[name], tcs[name], args.tables) for name in names}
    todo = [(name, run_id, params, seed) for name in names
            for run_id, params, seed in configurations(probs[name], tcs[name]) if (run_id, seed) not in done[name]]
    if args.limit:
        todo = todo[: args.limit]
    for name in names:
        partial = _partial(name, args.tables)
        if not partial.is_file() or json.loads(partial.read_text().splitlines()[0]).get("recipe") != \
                recipe(probs[name], tcs[name]):
            partial.write_text(json.dumps({"recipe": recipe(probs[name], tcs[name])}) + "\n")
            for r in done[name].values():
                with partial.open("a") as f:
                    f.write(json.dumps(r, separators=(",", ":")) + "\n")
    print(f"{sum(map(len, done.values()))} runs recorded, {len(todo)} to record, {args.jobs} at a time", flush=True)
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, initializer=_init,
                                initargs=(threads,)) as pool:
        futures = {pool.submit(_job, probs[name], tcs[name], run_id, params, seed): name
                   for name, run_id, params, seed in todo}
        for i, future in enumerate(cf.as_completed(futures), start=1):
            name, r = futures[future], future.result()
            done[name][(r["id"], r["seed"])] = r
            with _partial(name, args.tables).open("a") as f:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")
            best = min((e[1] for e in r["eval"] if math.isfinite(e[1])), default=float("nan"))
            print(f"[{time.time() - started:6.0f}s] {i}/{len(todo)} {name} {r['id']} seed {r['seed']}: "
                  f"{r['steps']} steps, best eval {best:.4f}, {r['seconds']:.1f} s", flush=True)
    from bench.search_replay.table import SURROGATE

    for name in names:
        wanted = {(run_id, seed) for run_id, _, seed in configurations(probs[name], tcs[name])}
        if not wanted <= set(done[name]):
            continue
        path = table_path(name, args.tables)
        header = read_table(name, args.tables)[0] if path.is_file() else {}
        fitted = header.get("surrogate")
        new = any(job[0] == name for job in todo)
        if new or _partial(name, args.tables).is_file() or (fitted or {}).get("version") != SURROGATE \
                or "full_trial_tokens" not in header:
            _write_table(probs[name], tcs[name], {k: done[name][k] for k in wanted}, args.tables,
                         None if new else fitted)
        fidelity = read_table(name, args.tables)[0]["surrogate"]["fidelity"]
        print(f"{path}: {len(wanted)} runs; surrogate k={fidelity['k']}, out-of-fold Spearman "
              f"{fidelity['surrogate_spearman']:.3f} (two training seeds: {fidelity['seed_spearman']:.3f})",
              flush=True)
    print(f"done in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
