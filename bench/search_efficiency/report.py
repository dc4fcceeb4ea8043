"""The benchmark's report: compute to reach the target, best loss by budget share, plots.

    python -m bench.search_efficiency.report                      # results/full
    python -m bench.search_efficiency.report --results bench/search_efficiency/results/smoke
    python -m bench.search_efficiency.report --readme             # also into bench/README.md

Definitions (per problem):

- compute = the non-padding training tokens of all a search's trials (pruned,
  paused and promoted ones included), what a GPU-hour buys;
- a search "finds" a loss when one of its trials completes: a run that
  reached its end (or was stopped early as converged), its best eval loss,
  whose checkpoint it keeps; paused and pruned trials find nothing;
- best = the lowest loss any search of any method found within its budget;
- target = 1.01 x best;
- compute to target = the tokens the search had trained when its first trial
  at or below the target completed; not reached (inf) if none did within the
  budget;
- best at 10/25/50/100% = the lowest loss found by the time the search had
  trained that share of its budget;
- early ranks: over the complete runs of random search (no pruning), the
  Spearman rank correlation between the eval loss at 10%, 30% and 50% of the
  run and the loss the run found: how far a low rung can be trusted.

Seeds are aggregated by the median (a median that falls on an unreached seed
is inf) and the mean over the seeds that reached the target. Ratios compare
medians; when one side never reached the target a bound is given instead.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
TARGET = 1.01
SHARES = (0.1, 0.25, 0.5, 1.0)
LABELS = {"tunefleet": "(a)", "tpe-median": "(b)", "tpe-hyperband": "(b')", "random": "(c)", "hf-optuna": "(d)",
          "neps-priorband": "(e)", "tunefleet-lr-x30": "(a')", "tunefleet-lr-div30": "(a'')"}
# (numerator, denominator, comparison, threshold, what it claims)
TARGETS = (
    ("tpe-median", "tunefleet", ">=", 3.0, "(a) needs >=3x less compute than (b)"),
    ("random", "tunefleet", ">=", 5.0, "(a) needs >=5x less compute than (c)"),
    ("tunefleet", "neps-priorband", "<=", 1.0, "(a) needs no more compute than (e) PriorBand"),
    ("tunefleet-lr-x30", "tpe-median", "<=", 1.3, "LR prior 30x too high: (a') needs <=1.3x the compute of (b)"),
    ("tunefleet-lr-div30", "tpe-median", "<=", 1.3, "LR prior 30x too low: (a'') needs <=1.3x the compute of (b)"),
)
EARLY = (0.1, 0.3, 0.5)
INF = math.inf
STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (5, 5)))


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


def found(trials: list[dict], budget: int) -> list[tuple[int, float]]:
    """(cumulative tokens, loss) of each complete trial within the budget."""
    return [(r["cumulative_tokens"], r["found"]) for r in trials
            if r["cumulative_tokens"] <= budget and r["found"] is not None and math.isfinite(r["found"])]


def to_target(points, target: float) -> float:
    """Tokens when the first trial at or below the target completed; inf if never."""
    return next((t for t, loss in points if loss <= target), INF)


def best_at(points, tokens: float) -> float:
    return min((loss for t, loss in points if t <= tokens), default=INF)


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
            out[fraction] = {"rho": float(rho), "runs": len(pairs)}
    return out


def median(values) -> float:
    values = sorted(values)
    if not values:
        return INF
    return statistics.median(values) if all(map(math.isfinite, values)) else _median_with_inf(values)


def _median_with_inf(values) -> float:
    n = len(values)
    mid = values[(n - 1) // 2], values[n // 2]
    return INF if INF in mid else (mid[0] + mid[1]) / 2


def analyse(run: dict, searches: dict) -> dict:
    out = {}
    for problem in run["config"]["problems"]:
        per = {k: v for k, v in searches.items() if k[0] == problem}
        if not per:
            continue
        budget = run["config"]["budget_tokens"][problem]
        points = {k: found(v, budget) for k, v in per.items()}
        all_losses = [loss for p in points.values() for _, loss in p]
        best = min(all_losses) if all_losses else INF
        target = TARGET * best
        methods = {}
        for method in [m for m in run["config"]["methods"] if any(k[1] == m for k in per)]:
            seeds = sorted(k[2] for k in per if k[1] == method)
            rows = []
            for seed in seeds:
                trials, p = per[(problem, method, seed)], points[(problem, method, seed)]
                within = [r for r in trials if r["cumulative_tokens"] <= budget]
                rows.append({
                    "seed": seed, "tokens_to_target": to_target(p, target),
                    "best_at": {share: best_at(p, share * budget) for share in SHARES},
                    "trials": len(trials), "configurations": len({r["lineage"] for r in trials}),
                    "paused": sum(r["paused"] for r in trials),
                    "pruned": sum(r["state"] == "PRUNED" and not r["paused"] for r in trials),
                    "wall_s": sum(r["wall_s"] for r in trials),
                    "best_lr": min(((r["found"], r["params"].get("learning_rate")) for r in within
                                    if r["found"] is not None), default=(INF, None))[1],
                })
            reached = [r["tokens_to_target"] for r in rows if math.isfinite(r["tokens_to_target"])]
            n_trials = max(1, sum(r["trials"] for r in rows))
            methods[method] = {
                "seeds": rows, "n": len(rows), "reached": len(reached),
                "median_tokens": median([r["tokens_to_target"] for r in rows]),
                "mean_tokens_reached": statistics.mean(reached) if reached else INF,
                "median_best_at": {s: median([r["best_at"][s] for r in rows]) for s in SHARES},
                "trials": statistics.mean(r["trials"] for r in rows),
                "configurations": statistics.mean(r["configurations"] for r in rows),
                "paused_share": sum(r["paused"] for r in rows) / n_trials,
                "pruned_share": sum(r["pruned"] for r in rows) / n_trials,
                "wall_s": statistics.mean(r["wall_s"] for r in rows),
                "best_lr": median([r["best_lr"] for r in rows if r["best_lr"] is not None]),
            }
        ratios = [_ratio(methods, num, den, op, threshold, claim, budget)
                  for num, den, op, threshold, claim in TARGETS if num in methods and den in methods]
        randoms = [r for k, v in per.items() if k[1] == "random" for r in v]
        out[problem] = {"best": best, "target": target, "budget": budget, "methods": methods, "ratios": ratios,
                        "early_ranks": early_ranks(randoms), "curves": dict(points)}
    return out


def _ratio(methods, num, den, op, threshold, claim, budget) -> dict:
    a, b = methods[num]["median_tokens"], methods[den]["median_tokens"]
    if math.isfinite(a) and math.isfinite(b):
        value, text = a / b, f"{a / b:.2f}"
        met = value >= threshold if op == ">=" else value <= threshold
    elif math.isfinite(b):  # the numerator's median never reached the target: the ratio exceeds budget / b
        value, text = budget / b, f"> {budget / b:.2f}"
        if op == ">=":
            met = True if value >= threshold else None
        else:
            met = False if value >= threshold else None
    elif math.isfinite(a):  # the denominator's median never reached it: the ratio is below a / budget
        value, text = a / budget, f"< {a / budget:.2f}"
        if op == "<=":
            met = True if value <= threshold else None
        else:
            met = False if value <= threshold else None
    else:
        value, text, met = None, "n/a (neither median search reached the target)", None
    return {"num": num, "den": den, "op": op, "threshold": threshold, "claim": claim, "value": value,
            "text": text, "met": met}


# ---- output ----------------------------------------------------------------------------------------


def _f(x, fmt="{:.0f}") -> str:
    return "not reached" if x is None or not math.isfinite(x) else fmt.format(x)


def _tokens(x) -> str:
    return "not reached" if x is None or not math.isfinite(x) else f"{x / 1e3:,.0f}k"


def markdown(run: dict, analysis: dict, results: Path, plots: dict) -> str:
    cfg, m = run["config"], run["machine"]
    lines = [
        f"### Results: preset `{cfg['preset']}` ({cfg['seeds']} seeds; each search may train the tokens of "
        f"{cfg['budget_full_trials']:g} full trials of its problem)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, transformers {m['transformers']}, "
        f"peft {m['peft']}, optuna {m['optuna']}"
        + (f", neural-pipeline-search {m['neural-pipeline-search']}" if "neural-pipeline-search" in m else "")
        + f". Wall time {run.get('wall_s', 0) / 60:.1f} min, "
        f"load average at start {m['load_average_at_start'][0]:.1f}"
        + (f", at end {m['load_average_at_end'][0]:.1f}" if "load_average_at_end" in m else "") + ".",
        f"(a) ran with sampler=`{cfg['options']['default_sampler']}`, pruner=`{cfg['options']['default_pruner']}`.",
        "",
    ]
    for problem, a in analysis.items():
        truth = run.get("truth", {}).get(problem)
        tc = cfg["trials"][problem]
        lines += [f"#### {problem}", "",
                  f"Trials of {tc['epochs']:g} epochs, seq_len {tc['seq_len']}; budget {a['budget']:,} tokens per "
                  f"search. Best loss found by any search: {a['best']:.4f}; target (x{TARGET}) {a['target']:.4f}."
                  + (f" Truth LR (sweep) {truth['truth_lr']:.3g} (loss {truth['truth_loss']:.4f})." if truth else ""),
                  ""]
        if truth:
            lines += ["LR sweep (starting config, one full trial each; best eval loss): "
                      + ", ".join(f"{p['learning_rate']:.3g}: {p['final_eval_loss']:.4f}" for p in truth["sweep"]),
                      ""]
        lines += ["| method | reached target | median tokens to target | mean (reached) | median best @10% | @25% "
                  "| @50% | @100% | LR of the best trial (median) | trials (configurations) /search | paused | "
                  "pruned | s/search |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for method, r in a["methods"].items():
            b = r["median_best_at"]
            lines.append(
                f"| {LABELS.get(method, '')} {method} | {r['reached']}/{r['n']} | {_tokens(r['median_tokens'])} | "
                f"{_tokens(r['mean_tokens_reached'])} | {_f(b[0.1], '{:.4f}')} | {_f(b[0.25], '{:.4f}')} | "
                f"{_f(b[0.5], '{:.4f}')} | {_f(b[1.0], '{:.4f}')} | {_f(r['best_lr'], '{:.2g}')} | "
                f"{r['trials']:.1f} ({r['configurations']:.1f}) | {r['paused_share']:.0%} | {r['pruned_share']:.0%} | "
                f"{r['wall_s']:.0f} |")
        lines += ["", "| ratio of median tokens to target | value | target | met |", "| --- | --- | --- | --- |"]
        for q in a["ratios"]:
            met = {True: "yes", False: "**no**", None: "undetermined"}[q["met"]]
            lines.append(f"| {LABELS[q['num']]}/{LABELS[q['den']]}: {q['claim']} | {q['text']} | "
                         f"{q['op']} {q['threshold']:g} | {met} |")
        if a["early_ranks"]:
            lines += ["", "Early ranks (random search's complete runs): Spearman correlation of the eval loss at "
                      + ", ".join(f"{f:.0%} of the run: {v['rho']:.2f}" for f, v in a["early_ranks"].items())
                      + f" with the loss the run found ({next(iter(a['early_ranks'].values()))['runs']} runs)."]
        if problem in plots:
            lines += ["", f"![best-so-far loss, {problem}]({plots[problem]})"]
        lines.append("")
    verdicts = [(p, q) for p, a in analysis.items() for q in a["ratios"]]
    met = [f"{LABELS[q['num']]}/{LABELS[q['den']]} on {p}" for p, q in verdicts if q["met"] is True]
    missed = [f"{LABELS[q['num']]}/{LABELS[q['den']]} on {p}" for p, q in verdicts if q["met"] is False]
    open_ = [f"{LABELS[q['num']]}/{LABELS[q['den']]} on {p}" for p, q in verdicts if q["met"] is None]
    lines += [f"Targets met: {', '.join(met) or 'none'}. Not met: {', '.join(missed) or 'none'}."
              + (f" Undetermined: {', '.join(open_)}." if open_ else ""), ""]
    return "\n".join(lines)


def plot(run: dict, analysis: dict, out_dir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = {}
    for problem, a in analysis.items():
        budget = a["budget"]
        xs = np.linspace(0, budget, 401)
        fig, ax = plt.subplots(figsize=(8, 5))
        tops = []
        for method in a["methods"]:
            curves = []
            for (p, m, seed), points in a["curves"].items():
                if p != problem or m != method:
                    continue
                y = np.full(len(xs), np.inf)
                for t, loss in points:
                    y[xs >= t] = np.minimum(y[xs >= t], loss)
                curves.append(y)
            if not curves:
                continue
            stack = np.vstack(curves)  # seeds x tokens; inf until a seed's first complete trial
            med = np.array([_median_with_inf(sorted(col)) for col in stack.T])
            low = np.min(stack, axis=0)
            # A seed with nothing found yet has no upper bound: the band runs off the top of the plot.
            cap = 2 * np.max(stack[np.isfinite(stack)]) if np.isfinite(stack).any() else 0.0
            high = np.where(np.isinf(stack).any(axis=0), cap, np.max(stack, axis=0))
            finite = np.isfinite(med)
            style = STYLES[list(a["methods"]).index(method) % len(STYLES)]
            line, = ax.step(xs[finite], med[finite], where="post", ls=style, lw=1.6,
                            label=f"{LABELS.get(method, '')} {method}")
            band = np.isfinite(low)
            ax.fill_between(xs[band], low[band], high[band], step="post", alpha=0.12, color=line.get_color())
            if finite.any():
                tops.append(med[finite][0])
        ax.axhline(a["target"], color="k", ls="--", lw=0.8, label=f"target ({TARGET} x best)")
        if tops and math.isfinite(a["best"]):
            ax.set_ylim(a["best"] - 0.02 * (max(tops) - a["best"] + 1e-3), max(tops) + 0.05 * (max(tops) - a["best"]))
        ax.set_xlim(0, budget)
        ax.set_xlabel("training tokens of the search (pruned and paused trials included)")
        ax.set_ylabel("best loss found so far (complete trials)")
        cfg = run["config"]
        ax.set_title(f"{problem}: median over {cfg['seeds']} seeds, band = min..max ({cfg['preset']})")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"best_so_far_{problem}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written[problem] = name
    return written


def _no_inf(x):
    """JSON has no infinity: a target never reached is null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _no_inf(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_inf(v) for v in x]
    return x


def splice_readme(text: str, rel_results: str, readme: Path = README) -> None:
    body = readme.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} section")
    text = text.replace("](best_so_far_", f"]({rel_results}/best_so_far_")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.search_efficiency.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results" / "full")
    p.add_argument("--readme", action="store_true", help="also write the tables into bench/README.md")
    args = p.parse_args(argv)
    if not (args.results / "run.json").is_file():
        print(f"no results in {args.results} (run: python -m bench.search_efficiency.run)", file=sys.stderr)
        return 2
    run, searches = load(args.results)
    analysis = analyse(run, searches)
    plots = plot(run, analysis, args.results)
    text = markdown(run, analysis, args.results, plots)
    (args.results / "report.md").write_text(text + "\n")
    summary = {p: {"best": a["best"], "target": a["target"], "budget": a["budget"], "early_ranks": a["early_ranks"],
                   "methods": {m: {k: v for k, v in r.items() if k != "seeds"} for m, r in a["methods"].items()},
                   "ratios": a["ratios"]} for p, a in analysis.items()}
    (args.results / "report.json").write_text(json.dumps(_no_inf(summary), indent=1))
    print(text)
    print(f"written: {args.results / 'report.md'}, report.json, "
          + ", ".join(str(args.results / f) for f in plots.values()))
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
