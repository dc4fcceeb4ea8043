"""The real benchmark's report, on the replay's statistics (bench/search_replay/stats.py):
normalized regret over the budget with bootstrap intervals, its area, the speedup over
TPE + Median, average ranks and seed-paired Wilcoxon tests, from real searches.

    python -m bench.search_efficiency.report --results bench/search_efficiency/results/check
    python -m bench.search_efficiency.report --results DIR --replay REPLAY_DIR   # + the agreement check
    python -m bench.search_efficiency.report --results DIR --readme             # also into bench/README.md

A search "finds" a loss when one of its trials completes (ran to its end, or was stopped
early as converged): its best eval loss, whose checkpoint it keeps; paused and pruned
trials find nothing. Its incumbent curve is the best loss found against the tokens all its
trials had trained by then (pruned, paused and promoted ones included), within its budget.
Also: early ranks, over random search's complete runs (or any method's), the Spearman
correlation of the eval loss at 10%, 30% and 50% of a run with the loss the run found.

With --replay, the agreement check: for each problem, the order of the methods both ran by
mean best loss at the budget and by regret area, in the real runs and in the replay's
report.json (the same budget and methods), and whether they match.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
EARLY = (0.1, 0.3, 0.5)


def load(results: Path) -> tuple[dict, dict[tuple[str, str, int], list[dict]]]:
    run = json.loads((results / "run.json").read_text())
    searches: dict = defaultdict(list)
    for path in sorted(results.glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            searches[(r["problem"], r["method"], r["seed"])].append(r)
    for trials in searches.values():
        trials.sort(key=lambda r: r["cumulative_tokens"])
    return run, dict(searches)


def incumbent(trials: list[dict], budget: int) -> list[tuple[int, float]]:
    """(tokens, loss) of each complete trial within the budget that improved on the ones before."""
    out, best = [], math.inf
    for r in trials:
        if r["cumulative_tokens"] <= budget and r["found"] is not None and r["found"] < best:
            best = r["found"]
            out.append((r["cumulative_tokens"], best))
    return out


def as_results(run: dict, searches: dict) -> list[dict]:
    """The real searches in the replay report's shape (bench/search_replay/report.py)."""
    cfg, out = run["config"], []
    for (problem, method, seed), trials in searches.items():
        budget = cfg["budget_tokens"][problem]
        out.append({"problem": problem, "method": method, "seed": seed, "budget": budget,
                    "full_trial_tokens": round(budget / cfg["budget_full_trials"]),
                    "incumbent": incumbent(trials, budget), "trials": len(trials),
                    "configurations": len({r["lineage"] for r in trials}),
                    "paused": sum(r["paused"] for r in trials),
                    "pruned": sum(r["state"] == "PRUNED" and not r["paused"] for r in trials),
                    "complete": sum(r["state"] == "COMPLETE" for r in trials),
                    "cpu_s": sum(r["wall_s"] for r in trials), "timing": {}})
    return out


def early_ranks(trials: list[dict]) -> dict:
    """Spearman correlation of the eval loss at EARLY fractions of a run with the loss it found."""
    from scipy.stats import spearmanr

    runs = [r for r in trials if r["found"] is not None and r["eval_curve"]]
    out = {}
    for fraction in EARLY:
        pairs = []
        for r in runs:
            curve = {int(k): v for k, v in r["eval_curve"].items()}
            end = max(curve)
            early = min(curve, key=lambda k: abs(k - fraction * end))
            pairs.append((curve[early], r["found"]))
        if len(pairs) >= 5:
            rho = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
            out[str(fraction)] = {"rho": float(rho), "runs": len(pairs)}
    return out


def agreement(real: dict, replay: dict) -> dict:
    """Per problem and pair of methods both ran: which finds the lower mean best loss at the
    budget in the real searches and in the replay, each with its seed-paired Wilcoxon p-value;
    they agree when the sign is the same, disagree when it differs and either side is
    significant (p < 0.05), and are within noise when it differs and neither is. Plus the
    order of the methods in each. The replay must have run as the real searches did (one
    worker, the same budget): else a SystemExit says so."""
    from itertools import combinations

    from bench.search_replay.stats import wilcoxon_p

    a, b = real["config"], replay["config"]
    if (b["workers"], b["budget_full_trials"]) != (a["workers"], a["budget_full_trials"]):
        raise SystemExit(f"the replay ran {b['workers']} workers at a budget of {b['budget_full_trials']:g} full "
                         f"trials; the real searches {a['workers']} at {a['budget_full_trials']:g}: replay them so")
    out = {}
    for name, pr in real["problems"].items():
        other = replay["problems"].get(name)
        if other is None:
            continue
        common = [m for m in pr["mean_best_loss"] if m in other["mean_best_loss"]]
        pairs = []
        for m1, m2 in combinations(common, 2):
            row = {"methods": [m1, m2]}
            for side, data in (("real", pr), ("replay", other)):
                x, y = ({int(k): v for k, v in data["best_loss_by_seed"][m].items()} for m in (m1, m2))
                row[side] = {"difference": data["mean_best_loss"][m1] - data["mean_best_loss"][m2],
                             "p": wilcoxon_p(x, y)}
            same = (row["real"]["difference"] > 0) == (row["replay"]["difference"] > 0)
            row["verdict"] = ("agree" if same else "disagree" if min(row["real"]["p"], row["replay"]["p"]) < 0.05
                              else "within noise")
            pairs.append(row)
        out[name] = {"order": {"real": sorted(common, key=lambda m: pr["mean_best_loss"][m]),
                               "replay": sorted(common, key=lambda m: other["mean_best_loss"][m])},
                     "pairs": pairs}
    return out


def agreement_markdown(check: dict, replay_dir: str) -> list[str]:
    lines = [f"#### Agreement with the replay ({replay_dir}: one worker, the same budget)", "",
             "Mean best loss at the budget, by pair of methods: the difference (first minus second) and its "
             "seed-paired Wilcoxon p-value in the real searches and in the replay.", "",
             "| problem | order, real | order, replay | pair | real: difference (p) | replay: difference (p) | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in check.items():
        for i, pair in enumerate(row["pairs"]):
            order = (f"{' < '.join(row['order']['real'])} | {' < '.join(row['order']['replay'])}" if i == 0
                     else " | ")
            r, s = pair["real"], pair["replay"]
            lines.append(f"| {name if i == 0 else ''} | {order} | {' vs '.join(pair['methods'])} | "
                         f"{r['difference']:+.4f} ({r['p']:.2g}) | {s['difference']:+.4f} ({s['p']:.2g}) | "
                         f"{'**disagree**' if pair['verdict'] == 'disagree' else pair['verdict']} |")
    return lines + [""]


def splice_readme(text: str, rel_results: str, section: str = "results", readme: Path = README) -> None:
    """Puts the report between bench/README.md's `<!-- SECTION:begin -->` and `:end -->` marks,
    its images linked from there."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    body = readme.read_text()
    if begin not in body or end not in body:
        raise SystemExit(f"{readme} has no {begin} ... {end} section")
    text = text.replace("](regret-", f"]({rel_results}/regret-").replace("](critical-", f"]({rel_results}/critical-")
    head, rest = body.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main(argv=None) -> int:
    from bench.search_replay import report as replay_report

    p = argparse.ArgumentParser(prog="python -m bench.search_efficiency.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results" / "check")
    p.add_argument("--replay", type=Path, help="a replay's output directory (report.json) to check against")
    p.add_argument("--readme", action="store_true", help="also write the tables into bench/README.md")
    args = p.parse_args(argv)
    if not (args.results / "run.json").is_file():
        print(f"no results in {args.results} (run: python -m bench.search_efficiency.run)", file=sys.stderr)
        return 2
    run, searches = load(args.results)
    cfg, m = run["config"], run["machine"]
    seeds = min(sum(1 for k in searches if k[:2] == (p_, m_)) for p_ in cfg["problems"] for m_ in cfg["methods"]
                if any(k[:2] == (p_, m_) for k in searches))
    methods = [x for x in cfg["methods"] if any(k[1] == x for k in searches)]
    default = "tunefleet" if "tunefleet" in methods else methods[0]
    config = {"title": f"Real runs: preset `{cfg['preset']}` ({seeds} seeds, one worker, budget "
                       f"{cfg['budget_full_trials']:g} full trials)",
              "preset": cfg["preset"], "seeds": seeds, "workers": 1, "budget_full_trials": cfg["budget_full_trials"],
              "problems": [x for x in cfg["problems"] if any(k[0] == x for k in searches)], "methods": methods,
              "default": default, "baseline": "tpe-median", "wall_s": run.get("wall_s", 0.0),
              "machine": {"cpu": m["cpu"], "cores": m["cores"]}}
    results = as_results(run, searches)
    analysis = replay_report.analyse(config, results, {})
    for name, pr in analysis["problems"].items():
        mine = [r for k, v in searches.items() if k[0] == name for r in v]
        pr["early_ranks"] = early_ranks([r for r in mine if r["method"] == "random"] or mine)
        truth = run.get("truth", {}).get(name)
        tc = cfg["trials"][name]
        pr["notes"] = [f"Trials of {tc['epochs']:g} epochs, seq_len {tc['seq_len']}; versions: torch {m['torch']}, "
                       f"transformers {m['transformers']}, peft {m['peft']}, optuna {m['optuna']}"
                       + (f", neural-pipeline-search {m['neural-pipeline-search']}" if "neural-pipeline-search" in m
                          else "") + "." + (f" Truth LR {truth['truth_lr']:.3g}." if truth else ""), ""]
        if pr["early_ranks"]:
            pr["notes"] += ["Early ranks (complete runs): Spearman of the eval loss at "
                            + ", ".join(f"{float(f):.0%} of the run: {v['rho']:.2f}"
                                        for f, v in pr["early_ranks"].items())
                            + f" with the loss the run found ({next(iter(pr['early_ranks'].values()))['runs']} runs).",
                            ""]
    plots = replay_report.plot(analysis, args.results)
    text = replay_report.markdown(analysis, plots, replay_report.critical_difference(config, results, args.results))
    if args.replay:
        replayed = json.loads((args.replay / "report.json").read_text())
        analysis["agreement"] = agreement(analysis, replayed)
        text += "\n" + "\n".join(agreement_markdown(analysis["agreement"], args.replay.as_posix()))
    (args.results / "report.md").write_text(text + "\n")
    analysis.pop("config")
    (args.results / "report.json").write_text(json.dumps({"config": config, **analysis}, indent=1,
                                                         default=replay_report._json))
    print(text)
    if args.readme:
        try:
            where = args.results.resolve().relative_to(README.parent.resolve()).as_posix()
        except ValueError:  # results outside bench/: link them by absolute path
            where = args.results.resolve().as_posix()
        splice_readme(text, where)
        print(f"and the tables into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
