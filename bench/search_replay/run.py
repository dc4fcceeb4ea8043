"""The replay benchmark: tunefleet's real search on a simulated fleet over recorded runs.

    python -m bench.search_replay.run --preset quick --out DIR   # 4 methods x 50 seeds x every problem
    python -m bench.search_replay.run --preset full --out DIR    # every method
    python -m bench.search_replay.run --preset smoke --out DIR   # the harness in seconds (the test suite's)

Each search runs on `--workers` simulated workers (bench/search_replay/fleet.py) for a
budget of `--budget` full trials of training tokens, over the problem's recorded table
(bench/search_replay/record.py); DIR/report.json, DIR/report.md and the plots say what
bench/search_replay/stats.py computes. Searches run `--jobs` at a time, one process each.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

from bench.search_efficiency import problems
from bench.search_replay.methods import BASELINE, DEFAULT, METHODS

HERE = Path(__file__).resolve().parent
PROBLEMS = problems.PROBLEMS  # the recorded tables: every problem of the real benchmark
QUICK = ("tunefleet", "tpe-median", "neps-priorband", "tunefleet-prior-bad")
FULL = ("tunefleet", "tpe-median", "tpe-hyperband", "random", "neps-priorband", "tunefleet-lr-x30",
        "tunefleet-lr-div30", "tunefleet-prior-good", "tunefleet-prior-medium", "tunefleet-prior-bad")
PRESETS = {
    "quick": {"seeds": 50, "budget": 20.0, "workers": 4, "methods": ",".join(QUICK)},
    "full": {"seeds": 50, "budget": 20.0, "workers": 4, "methods": ",".join(FULL)},
    "smoke": {"seeds": 3, "budget": 4.0, "workers": 2, "methods": "tunefleet,tpe-median"},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.search_replay.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS, default="quick", help="base configuration (default: quick)")
    p.add_argument("--out", type=Path, required=True, help="where report.json, report.md and the plots go")
    p.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated")
    p.add_argument("--methods", help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, help="searches per (problem, method); seeds 0..N-1")
    p.add_argument("--workers", type=int, help="simulated workers per search")
    p.add_argument("--budget", type=float, help="training tokens per search, in full trials of the problem")
    p.add_argument("--jobs", type=int, default=2, help="searches run at once, one process each (default 2)")
    p.add_argument("--tables", type=Path, default=HERE / "tables")
    p.add_argument("--readme", action="store_true", help="also put the report into bench/README.md")
    p.add_argument("--reuse", type=Path, help="an earlier output directory: its searches of methods not run now "
                   "(the same problems, seeds, workers and budget) join the report, e.g. the baselines while the "
                   "default changes")
    p.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                   help="a StudySpec field for tunefleet's own methods (the default and its variants), e.g. "
                   "--option 'sampler=\"pibo\"': an idea tried against the baselines of --reuse")
    args = p.parse_args(argv)
    try:
        args.options = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.option)}
    except json.JSONDecodeError as e:
        p.error(f"--option takes KEY=JSON: {e}")
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.problems = [x for x in args.problems.split(",") if x]
    args.methods = [x for x in args.methods.split(",") if x]
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method '{m}' (choose from {', '.join(METHODS)})")
    for name in args.problems:
        if not (args.tables / f"{name}.jsonl.gz").is_file():
            p.error(f"no recorded table for '{name}' in {args.tables} (record it: python -m bench.search_replay.record)")
    if "neps-priorband" in args.methods:
        try:
            import neps  # noqa: F401
        except ImportError:
            p.error("neps-priorband needs the bench extra (neural-pipeline-search): see bench/README.md, or "
                    "leave it out with --methods")
    if args.seeds < 1 or args.workers < 1 or args.budget <= 0:
        p.error("--seeds and --workers must be at least 1, --budget positive")
    return args


# ---- one search, in a worker process ----------------------------------------------------------------

_TABLES: dict = {}


def load(name: str, tables: Path):
    """(problem, trial config, table, full-trial tokens) of a recorded problem, once per process."""
    if name not in _TABLES:
        from bench.search_efficiency.methods import TrialConfig
        from bench.search_efficiency.problems import Problem
        from bench.search_replay.record import read_table, wide_space
        from bench.search_replay.table import Table

        header, runs = read_table(name, tables)
        recipe = header["recipe"]
        problem, tc = Problem(**recipe["problem"]), TrialConfig(**recipe["trial_config"])  # no model files needed
        table = Table(runs, wide_space(problem, tc), header.get("surrogate"))
        full = header.get("full_trial_tokens") or statistics.median(c.total_tokens for c in table.curves)
        _TABLES[name] = (problem, tc, table, round(full))
    return _TABLES[name]


def _init() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYTHONHASHSEED"] = "0"  # NePS orders string choices by hash
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("tunefleet").setLevel(logging.WARNING)


def search_job(name: str, method: str, seed: int, budget_full: float, workers: int, tables: Path,
               options: dict) -> dict:
    from bench.search_replay.fleet import replay
    from bench.search_replay.methods import open_search

    _init()
    problem, tc, table, full = load(name, tables)
    budget = round(budget_full * full)
    started = time.process_time()
    history = replay(open_search(method, problem, tc, table, seed, budget, options), workers)
    return {"problem": name, "method": method, "seed": seed, "budget": budget, "full_trial_tokens": full,
            "incumbent": history.incumbent(), "spent": history.spent, "trials": len(history.ended),
            "configurations": len({e.lineage for e in history.ended}),
            "paused": sum(e.paused for e in history.ended),
            "pruned": sum(e.state == "PRUNED" and not e.paused for e in history.ended),
            "complete": sum(e.state == "COMPLETE" for e in history.ended),
            "cpu_s": round(time.process_time() - started, 3), "timing": history.timing}


def fidelity_job(name: str, tables: Path) -> dict:
    _init()
    table = load(name, tables)[2]
    return table.stored_fidelity or table.fidelity()


# ---- the run ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["PYTHONHASHSEED"] = "0"
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(n, m, s) for n in args.problems for m in args.methods for s in range(args.seeds)]
    # NePS is the slowest to ask: first, so that the last searches do not run alone.
    jobs.sort(key=lambda j: (j[1] != "neps-priorband", j[2]))
    print(f"{len(jobs)} searches on {args.workers} simulated workers each, budget {args.budget:g} full trials, "
          f"{args.jobs} at a time", flush=True)
    results, fidelity = _reused(args), {}
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        fid = {pool.submit(fidelity_job, n, args.tables): n for n in args.problems}
        futures = [pool.submit(search_job, n, m, s, args.budget, args.workers, args.tables, args.options)
                   for n, m, s in jobs]
        for i, future in enumerate(cf.as_completed(futures), start=1):
            results.append(future.result())
            if i % max(1, len(jobs) // 20) == 0 or i == len(jobs):
                print(f"[{time.time() - started:5.0f}s] {i}/{len(jobs)} searches", flush=True)
        for future, n in fid.items():
            fidelity[n] = future.result()
    from bench.search_replay import report

    (args.out / "searches.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    methods = list(dict.fromkeys(args.methods + [r["method"] for r in results]))
    config = {"preset": args.preset, "seeds": args.seeds, "workers": args.workers, "budget_full_trials": args.budget,
              "problems": args.problems, "methods": methods, "options": args.options, "default": DEFAULT, "baseline": BASELINE,
              "wall_s": round(time.time() - started, 1), "machine": _machine()}
    report.write(args.out, config, results, fidelity)
    print(f"done in {time.time() - started:.0f} s: {args.out / 'report.md'}", flush=True)
    if args.readme:
        from bench.search_efficiency.report import splice_readme

        splice_readme((args.out / "report.md").read_text(), _linkable(args.out), f"replay-{args.preset}")
    return 0


def _reused(args) -> list[dict]:
    """The searches of --reuse DIR for methods not run now, on the same problems and seeds; the same
    workers and budget or a SystemExit."""
    if args.reuse is None:
        return []
    held = json.loads((args.reuse / "report.json").read_text())["config"]
    if (held["workers"], held["budget_full_trials"]) != (args.workers, args.budget):
        raise SystemExit(f"{args.reuse} ran {held['workers']} workers at a budget of {held['budget_full_trials']:g}: "
                         "not comparable")
    rows = [json.loads(x) for x in (args.reuse / "searches.jsonl").read_text().splitlines()]
    return [r for r in rows if r["method"] not in args.methods and r["problem"] in args.problems
            and r["seed"] < args.seeds]


def _linkable(out: Path) -> str:
    from bench.search_efficiency.report import README

    try:
        return out.resolve().relative_to(README.parent.resolve()).as_posix()
    except ValueError:
        return out.resolve().as_posix()


def _machine() -> dict:
    import platform

    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


if __name__ == "__main__":
    sys.exit(main())
