"""The replay benchmark's report: report.json (the names the checks read), report.md and
the plots, from the searches' incumbent curves (bench/search_replay/stats.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bench.search_replay import stats
from bench.search_replay.methods import METHODS

LABELS = {"tunefleet": "(a)", "tpe-median": "(b)", "tpe-hyperband": "(b')", "random": "(c)",
          "neps-priorband": "(e)", "tunefleet-lr-x30": "(a')", "tunefleet-lr-div30": "(a'')",
          "tunefleet-prior-good": "(a)+good", "tunefleet-prior-medium": "(a)+medium",
          "tunefleet-prior-bad": "(a)+bad"}
STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (5, 5)),
          (0, (3, 5, 1, 5)), (0, (1, 3)))


def analyse(config: dict, results: list[dict], fidelity: dict) -> dict:
    """report.json's content: per problem, per method, the figures stats.summarise gives."""
    default, baseline = config["default"], config["baseline"]
    problems = {}
    for name in config["problems"]:
        mine = [r for r in results if r["problem"] == name]
        if not mine:
            continue
        methods = [m for m in config["methods"] if any(r["method"] == m for r in mine)]
        curves = {m: {r["seed"]: r["incumbent"] for r in mine if r["method"] == m} for m in methods}
        s = stats.summarise(curves, mine[0]["budget"], default, baseline)
        rows = s["methods"]
        searches = {m: [r for r in mine if r["method"] == m] for m in methods}
        problems[name] = {
            "budget_tokens": mine[0]["budget"], "full_trial_tokens": mine[0]["full_trial_tokens"],
            "best": s["best"], "worst": s["worst"],
            "speedup_vs_tpe_median": {m: rows[m]["speedup"]["value"] for m in methods if "speedup" in rows[m]},
            "speedup_exact": {m: rows[m]["speedup"]["exact"] for m in methods if "speedup" in rows[m]},
            "regret_auc": {m: rows[m]["regret_auc"][0] for m in methods},
            "regret_auc_ci": {m: rows[m]["regret_auc"][1:] for m in methods},
            "final_regret": {m: rows[m]["final_regret"][0] for m in methods},
            "final_regret_ci": {m: rows[m]["final_regret"][1:] for m in methods},
            "regret_at": {m: {k: v[0] for k, v in rows[m]["regret_at"].items()} for m in methods},
            "rank_at": {m: rows[m]["rank_at"] for m in methods},
            "mean_best_loss": {m: rows[m]["mean_best_loss"] for m in methods},
            "best_loss_by_seed": {m: rows[m]["best_loss_by_seed"] for m in methods},
            "wilcoxon_p": {m: rows[m]["wilcoxon_p_final"] for m in methods if "wilcoxon_p_final" in rows[m]},
            "wilcoxon_p_auc": {m: rows[m]["wilcoxon_p_auc"] for m in methods if "wilcoxon_p_auc" in rows[m]},
            "surrogate_spearman": (fidelity.get(name) or {}).get("surrogate_spearman"),
            "fidelity": fidelity.get(name),
            "searches": {m: {"n": len(v), "trials": _mean(v, "trials"), "configurations": _mean(v, "configurations"),
                             "paused": _mean(v, "paused"), "pruned": _mean(v, "pruned"),
                             "complete": _mean(v, "complete"), "cpu_s": _mean(v, "cpu_s"),
                             "timing": {k: float(np.mean([r["timing"][k] for r in v])) for k in v[0]["timing"]}}
                         for m, v in searches.items()},
            "mean_regret_curves": s["mean_regret_curves"], "bands": s["bands"],
        }
    return {"config": config, "seeds": config["seeds"], "problems": problems}


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def write(out: Path, config: dict, results: list[dict], fidelity: dict) -> dict:
    analysis = analyse(config, results, fidelity)
    (out / "report.json").write_text(json.dumps(analysis, indent=1, default=_json))
    plots = plot(analysis, out)
    cd = critical_difference(config, results, out)
    (out / "report.md").write_text(markdown(analysis, plots, cd))
    return analysis


def _json(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x))


def _p(p) -> str:
    return "-" if p is None else f"{p:.2g}" if p >= 0.001 else "<0.001"


def markdown(analysis: dict, plots: dict, cd: str | None) -> str:
    c = analysis["config"]
    title = c.get("title") or (f"Replay: preset `{c['preset']}` ({c['seeds']} seeds, {c['workers']} simulated "
                               f"workers, budget {c['budget_full_trials']:g} full trials)")
    lines = [f"### {title}", "",
             f"Machine: {c['machine']['cpu']}, {c['machine']['cores']} cores. Wall time {c['wall_s'] / 60:.1f} min. "
             f"Regret: normalized per problem over every method and seed (0 = the best loss any search found, "
             f"1 = the worst incumbent); mean over seeds with a bootstrap 95% interval. Speedup: tokens TPE + "
             f"Median's mean best loss needs to reach its own final value over the tokens the method's needs "
             f"(\"<\": never reached, an upper bound). p: two-sided Wilcoxon signed-rank test of the final "
             f"regret of {LABELS.get(c['default'], '')} {c['default']} against the method, seed-paired.", ""]
    for name, pr in analysis["problems"].items():
        f = pr["fidelity"]
        surrogate = "" if not f else (
            f" Surrogate: out-of-fold Spearman {_num(f.get('surrogate_spearman'))} over {f['configurations']} "
            f"recorded configurations; between two training seeds of one configuration "
            f"{_num(f.get('seed_spearman'))} ({f.get('seed_pairs', 0)} pairs, median relative difference "
            f"{_num(f.get('seed_median_relative_difference'), '{:.2%}')}).")
        lines += [f"#### {name}", "",
                  f"Budget {pr['budget_tokens']:,} tokens ({pr['full_trial_tokens']:,} a full trial). Best loss "
                  f"{pr['best']:.4f}, worst incumbent {pr['worst']:.4f}.{surrogate}", "",
                  "| method | regret @10% | @25% | @50% | @100% (95% CI) | area (95% CI) | speedup vs (b) | p (final) "
                  "| p (area) | mean rank | trials (configs) | complete | paused | CPU s/search |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for m in pr["regret_auc"]:
            at, s = pr["regret_at"][m], pr["searches"][m]
            lo, hi = pr["final_regret_ci"][m]
            alo, ahi = pr["regret_auc_ci"][m]
            sp = pr["speedup_vs_tpe_median"].get(m)
            sp_text = "-" if sp is None else (f"{sp:.2f}" if pr["speedup_exact"][m] else f"< {sp:.2f}")
            lines.append(f"| {LABELS.get(m, '')} {m} | {at['0.1']:.3f} | {at['0.25']:.3f} | {at['0.5']:.3f} | "
                         f"{at['1.0']:.3f} ({lo:.3f}-{hi:.3f}) | {pr['regret_auc'][m]:.3f} ({alo:.3f}-{ahi:.3f}) | "
                         f"{sp_text} | {_p(pr['wilcoxon_p'].get(m))} | {_p(pr['wilcoxon_p_auc'].get(m))} | "
                         f"{pr['rank_at'][m]['1.0']:.2f} | {s['trials']:.0f} ({s['configurations']:.0f}) | "
                         f"{s['complete']:.1f} | {s['paused']:.0f} | {s['cpu_s']:.2f} |")
        lines += [""] + pr.get("notes", []) + [f"![{name}]({plots[name]})", ""]
    timing = _time_spent(analysis)
    if timing:
        lines += ["Where the time goes (CPU seconds per search, mean over problems and seeds): claiming a trial "
                  "(the claim protocol and the sampler), replaying steps (the callbacks and detectors), evaluations "
                  "(reports and the pruner), telling ends (workers.trial_outcome.report).", "",
                  "| method | per search | claim (sampler) | steps | evaluations | tell |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {m} | {t['cpu_s']:.2f} | {t['claim_s']:.2f} | {t['train_s']:.2f} | {t['evaluate_s']:.2f} | "
                  f"{t['tell_s']:.2f} |" for m, t in timing.items()]
        lines.append("")
    if cd:
        lines += [f"Critical-difference diagram of final regret over every problem and seed (autorank: Friedman + "
                  f"Nemenyi, alpha 0.05): ![critical difference]({cd})", ""]
    return "\n".join(lines)


def _time_spent(analysis: dict) -> dict[str, dict[str, float]]:
    """{method: mean CPU seconds per search, and per part}, over problems (replays only)."""
    rows: dict = {}
    for pr in analysis["problems"].values():
        for m, s in pr["searches"].items():
            if s["timing"]:
                rows.setdefault(m, []).append({"cpu_s": s["cpu_s"], **s["timing"]})
    return {m: {k: float(np.mean([r[k] for r in v])) for k in v[0]} for m, v in rows.items()}


def _num(x, fmt="{:.2f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def plot(analysis: dict, out: Path) -> dict[str, str]:
    """Mean normalized regret against training tokens (in full trials), a 95% band per method."""
    from workers import plots

    files = {}
    for name, pr in analysis["problems"].items():
        fig, (ax,) = plots.figure(1, 7, 4.5, f"{name}: mean normalized regret (95% bootstrap band)")
        full, budget = pr["full_trial_tokens"], pr["budget_tokens"]
        x = stats.grid(budget) / full
        for i, (m, curve) in enumerate(pr["mean_regret_curves"].items()):
            ax.plot(x, curve, linestyle=STYLES[i % len(STYLES)], label=f"{LABELS.get(m, '')} {m}")
            band = pr.get("bands", {}).get(m)
            if band:
                ax.fill_between(x, band[0], band[1], alpha=0.15)
        ax.set_xlabel("training tokens spent, in full trials")
        ax.set_ylabel("normalized regret")
        ax.set_yscale("symlog", linthresh=0.01)
        ax.legend(fontsize=7)
        path = out / f"regret-{name}.png"
        fig.savefig(path)
        files[name] = path.name
    return files


def critical_difference(config: dict, results: list[dict], out: Path) -> str | None:
    """autorank's critical-difference diagram of final regret, blocks = (problem, seed); None
    without autorank (the bench extra) or with fewer than 3 methods."""
    try:
        import pandas as pd
        from autorank import autorank, plot_stats
    except ImportError:
        return None
    rows = {}
    for name in config["problems"]:
        mine = [r for r in results if r["problem"] == name]
        if not mine:
            continue
        curves = {m: {r["seed"]: r["incumbent"] for r in mine if r["method"] == m} for m in config["methods"]
                  if any(r["method"] == m for r in mine)}
        regrets, _, _ = stats.regret_table(curves, mine[0]["budget"])
        for seed in sorted(set.intersection(*(set(v) for v in regrets.values()))):
            rows[(name, seed)] = {m: float(v[seed][-1]) for m, v in regrets.items()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if frame.shape[1] < 3 or frame.shape[0] < 5:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import contextlib
    import io
    import warnings

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # autorank prints its tables
        warnings.simplefilter("ignore")
        result = autorank(frame, alpha=0.05, verbose=False, order="ascending")
        ax = plot_stats(result, allow_insignificant=True)
    path = out / "critical-difference.png"
    ax.figure.savefig(path, bbox_inches="tight")
    return path.name
