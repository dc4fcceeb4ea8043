"""Run the search-efficiency benchmark: every (problem, method, seed) search, N at a time.

    python -m bench.search_efficiency.run --preset smoke          # 2 seeds, 2 full trials of tokens: minutes
    python -m bench.search_efficiency.run --preset full --report  # 5 seeds, 5 full trials of tokens, then the report

Results go to bench/search_efficiency/results/<preset>/: one JSONL per
(problem, method) with one line per trial, and run.json (configuration,
machine, one summary per search). A search already in the results is not run
again, so an interrupted run continues where it stopped; --fresh starts over.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from bench.search_efficiency import problems as problems_mod
from bench.search_efficiency.methods import DEFAULT_METHODS, LR_VARIANTS, METHODS, Options, TrialConfig

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

PRESETS = {
    # Proves the harness end to end in minutes; its numbers mean little.
    "smoke": {"seeds": 1, "budget": 1.5, "epochs_scale": 0.25, "methods": "tunefleet,tpe-median,hf-optuna,neps-priorband"},
    # The benchmark: each search may train as many tokens as 5 full trials of the problem
    # (3 problems x 8 methods x 5 seeds, 2 searches at a time on 2 cores: about 85 minutes).
    "full": {"seeds": 5, "budget": 5.0, "epochs_scale": 1.0, "methods": ",".join(DEFAULT_METHODS)},
    # The check of the replay (bench/search_replay): (a), (b) and (e) at 20 seeds and 10 full trials of
    # tokens, the replay's statistics; hours on 2 cores, meant for the background.
    "check": {"seeds": 20, "budget": 10.0, "epochs_scale": 1.0, "methods": "tunefleet,tpe-median,neps-priorband"},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.search_efficiency.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=PRESETS, default="full", help="base configuration (default: full)")
    p.add_argument("--seeds", type=int, help="searches per (problem, method); seeds 0..N-1")
    p.add_argument("--budget", type=float, help="training tokens per search, in full trials of the problem")
    p.add_argument("--epochs-scale", type=float, help="multiplies each problem's epochs per trial")
    p.add_argument("--seq-len", type=int, default=TrialConfig.seq_len)
    p.add_argument("--max-eval-examples", type=int, default=TrialConfig.max_eval_examples)
    p.add_argument("--problems", default=",".join(problems_mod.REAL), help="comma-separated")
    p.add_argument("--methods", help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--default-sampler", default=Options.default_sampler, help="sampler of (a) and (a')")
    p.add_argument("--default-pruner", default=Options.default_pruner, help="pruner of (a) and (a')")
    p.add_argument("--jobs", type=int, default=2, help="searches run at once, one process each (default 2)")
    p.add_argument("--results", type=Path, help="results directory (default results/<preset>)")
    p.add_argument("--fresh", action="store_true", help="delete earlier results of this configuration first")
    p.add_argument("--report", action="store_true", help="write the report and plots when done")
    p.add_argument("--readme", action="store_true", help="with --report: also put the tables into bench/README.md")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.results = args.results or RESULTS / args.preset
    args.problems = [x for x in args.problems.split(",") if x]
    args.methods = [x for x in args.methods.split(",") if x]
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method '{m}' (choose from {', '.join(METHODS)})")
    if "neps-priorband" in args.methods:
        try:
            import neps  # noqa: F401
        except ImportError:
            p.error("neps-priorband needs the bench extra (neural-pipeline-search): see bench/README.md, or "
                    "leave it out with --methods")
    for name in args.problems:
        if name not in problems_mod.PROBLEMS:
            p.error(f"unknown problem '{name}' (choose from {', '.join(problems_mod.PROBLEMS)})")
    return args


def machine() -> dict:
    import optuna
    import peft
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
           "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "optuna": optuna.__version__, "load_average_at_start": list(os.getloadavg())}
    try:
        from importlib.metadata import version

        out["neural-pipeline-search"] = version("neural-pipeline-search")
    except Exception:
        pass
    return out


# ---- the worker processes ----------------------------------------------------------------------------


def _init_worker(threads: int) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(threads)


def _search_job(problem, method, seed, tc, budget, truth_lr, opts):
    from bench.search_efficiency.methods import run_search

    return run_search(problem, method, seed, tc, budget, truth_lr, opts)


def _tokens_job(problem, tc):
    from bench.search_efficiency.methods import full_trial_tokens

    return full_trial_tokens(problem, tc)


def _sweep_job(problem, tc_dict, lr):
    from bench.search_efficiency.methods import sweep_point

    return sweep_point(problem, tc_dict, lr)


# ---- the run -------------------------------------------------------------------------------------------


def _done_searches(results: Path) -> set[tuple[str, str, int]]:
    done = set()
    for path in results.glob("*/*.jsonl"):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["problem"], r["method"], r["seed"]))
    return done


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["PYTHONHASHSEED"] = "0"  # NePS orders string choices by hash: the same runs every time
    started = time.time()
    opts = Options(default_sampler=args.default_sampler, default_pruner=args.default_pruner)
    tcs = {name: TrialConfig(epochs=problems_mod.EPOCHS[name] * args.epochs_scale, seq_len=args.seq_len,
                             max_eval_examples=args.max_eval_examples) for name in args.problems}
    from bench.search_efficiency import corpus

    config = {"preset": args.preset, "seeds": args.seeds, "budget_full_trials": args.budget, "corpus": corpus.digest(),
              "trials": {name: dataclasses.asdict(tc) for name, tc in tcs.items()},
              "options": dataclasses.asdict(opts), "problems": args.problems, "methods": args.methods}
    run_file = args.results / "run.json"
    if args.fresh and args.results.exists():
        shutil.rmtree(args.results)
    run = json.loads(run_file.read_text()) if run_file.is_file() else None
    if run is not None and _comparable(run["config"]) != _comparable(config):
        print(f"{args.results} holds results of another configuration; add --fresh to replace them "
              f"or --results DIR to keep both", file=sys.stderr)
        return 2
    if run is None:
        run = {"config": config, "machine": machine(), "truth": {}, "searches": [], "wall_s": 0.0}
    # A run continued for some methods, problems or seeds reports on all it holds.
    held = run["config"]
    merged = {k: list(dict.fromkeys(held.get(k, []) + config[k])) for k in ("methods", "problems")}
    run["config"] = {**config, **merged, "seeds": max(held.get("seeds", 0), config["seeds"]),
                     "budget_tokens": held.get("budget_tokens", {})}
    args.results.mkdir(parents=True, exist_ok=True)

    print(f"building problems under {problems_mod.CACHE} (once)...", flush=True)
    from bench.search_efficiency.methods import full_trial_tokens

    probs = {name: problems_mod.build(name) for name in args.problems}
    budgets = {}
    for p in probs.values():
        budgets[p.name] = round(args.budget * full_trial_tokens(p, tcs[p.name]))
        print(f"  {p.name}: {p.method}, {p.n_examples} examples, {p.n_params:,} parameters; "
              f"{tcs[p.name].epochs:g} epochs per full trial; budget {budgets[p.name]:,} tokens", flush=True)
    run["config"]["budget_tokens"] = {**run["config"]["budget_tokens"], **budgets}

    done = _done_searches(args.results)
    need_truth = any(m in LR_VARIANTS for m in args.methods)
    truths = ({name: problems_mod.load_truth(p, dataclasses.asdict(tcs[name])) for name, p in probs.items()}
              if need_truth else {})
    pending = [(name, m, s) for name in args.problems for m in args.methods for s in range(args.seeds)
               if (name, m, s) not in done]
    # Seed by seed, so that an unfinished run holds whole seeds to compare; within a seed the slowest
    # first (no pruning, long trials), so that the last searches do not run alone.
    order = {"hf-optuna": 0, "random": 1, "tpe-median": 2}
    pending.sort(key=lambda job: (job[2], order.get(job[1], 3)))
    print(f"{len(done)} searches already done, {len(pending)} to run, {args.jobs} at a time; "
          f"results in {args.results}", flush=True)

    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads,)) as pool:
        futures: dict = {}
        for name, t in truths.items():
            if t is None:
                print(f"  [{name}] learning-rate sweep ({len(problems_mod.SWEEP_LRS)} trials) for the truth",
                      flush=True)
                for lr in problems_mod.SWEEP_LRS:
                    futures[pool.submit(_sweep_job, probs[name], dataclasses.asdict(tcs[name]), lr)] = \
                        ("sweep", name, lr)
        sweep_losses: dict = {name: {} for name in truths}
        waiting = []

        def submit(job):
            name, method, seed = job
            truth = truths.get(name)
            return pool.submit(_search_job, probs[name], method, seed, tcs[name], budgets[name],
                               truth["truth_lr"] if truth else None, opts)

        for job in pending:
            if job[1] in LR_VARIANTS and truths.get(job[0]) is None:
                waiting.append(job)
                continue
            futures[submit(job)] = ("search",) + job
        while futures:
            finished, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                kind, *key = futures.pop(future)
                if kind == "sweep":
                    name, lr = key
                    sweep_losses[name][lr] = future.result()
                    if len(sweep_losses[name]) == len(problems_mod.SWEEP_LRS):
                        losses = [sweep_losses[name][lr] for lr in problems_mod.SWEEP_LRS]
                        truths[name] = problems_mod.save_truth(probs[name], dataclasses.asdict(tcs[name]), losses)
                        print(f"  [{name}] truth lr = {truths[name]['truth_lr']:.3g} "
                              f"(best eval loss {truths[name]['truth_loss']:.4f})", flush=True)
                        for job in [j for j in waiting if j[0] == name]:
                            waiting.remove(job)
                            futures[submit(job)] = ("search",) + job
                    continue
                records, summary = future.result()
                _append(args.results, records)
                run["searches"].append(summary)
                run["truth"] = {n: {k: v for k, v in t.items() if k != "key"} for n, t in truths.items() if t}
                run_file.write_text(json.dumps(run, indent=1))
                best = min((r["found"] for r in records if r["found"] is not None), default=float("nan"))
                print(f"[{time.time() - started:6.0f}s] {summary['problem']:18} {summary['method']:18} "
                      f"seed {summary['seed']}: {summary['trials']:3} trials, {summary['tokens']:,} tokens, "
                      f"best {best:.4f}, {summary['wall_s']:.0f} s", flush=True)

    run["machine"]["load_average_at_end"] = list(os.getloadavg())
    run["wall_s"] = round(run.get("wall_s", 0) + time.time() - started, 1)
    run["truth"] = {n: {k: v for k, v in t.items() if k != "key"} for n, t in truths.items() if t}
    run_file.write_text(json.dumps(run, indent=1))
    print(f"done in {time.time() - started:.0f} s; results in {args.results}", flush=True)
    if args.report:
        from bench.search_efficiency import report

        return report.main(["--results", str(args.results)] + (["--readme"] if args.readme else []))
    return 0


def _comparable(config: dict) -> dict:
    """What must match for old and new searches to be compared (not the lists of what runs)."""
    return {k: v for k, v in config.items() if k not in ("methods", "problems", "seeds", "budget_tokens")}


def _append(results: Path, records: list[dict]) -> None:
    """All trials of one search at once: a search is in the results whole or not at all."""
    if not records:
        return
    path = results / records[0]["problem"] / f"{records[0]['method']}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


if __name__ == "__main__":
    sys.exit(main())
