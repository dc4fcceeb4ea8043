"""Every text view of the command line: what a command prints for people (its --json is the
report's own dict). search/report.py builds the reports (a trial's "ended" text with
describe_prune from here); these only lay them out."""

from __future__ import annotations

import csv
import io
import json

from spaces.memory import GIB


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def describe_prune(reason: dict) -> str:
    """One line: which detector ended the trial, when, and its rule with the numbers it saw
    (each detector words its own, workers/detectors/)."""
    why = reason.get("evidence", {}).get("rule", "")
    return f"by {reason.get('detector', 'unknown')} at step {reason.get('step')}: {why}"


def created(name: str, spec, queued: int) -> str:
    size = f"{spec.max_steps} steps" if spec.max_steps else f"{spec.epochs:g} epochs"
    first = "the prior's mode queued as the first trial" if queued else "nothing queued"
    return (f"study '{name}': {spec.method} on {spec.n_examples} examples, {spec.n_trials} configurations of "
            f"{size}, sampler {spec.sampler}, pruner {spec.pruner}; {first}.\n"
            f"start workers with: tunefleet worker {name}")


def status(report: dict) -> str:
    """`tunefleet status`: counts, compute, the best, running trials and why trials were pruned."""
    counts = "  ".join(f"{k} {v}" for k, v in report["counts"].items() if v)
    compute = report["compute"]
    limit = f" of {report['max_tokens']:,}" if report["max_tokens"] else ""
    lines = [f"study {report['study']} ({report['method']}), {report['configurations']} of "
             f"{report['n_trials']} configurations: {counts or 'no trials'}"
             + (f" ({report['paused']} of the pruned paused at a rung)" if report["paused"] else ""),
             f"compute: {compute['tokens']:,}{limit} training tokens, {compute['seconds']:.1f} s in training"]
    lines += progress(report["progress"])
    if report["stopped"]:
        lines.append(f"stopped: {report['stopped']}")
    if report["best"]:
        best = report["best"]
        lines += [f"best: trial {best['number']}, eval loss {best['value']:.4f}",
                  "  " + " ".join(f"{k}={_short(v)}" for k, v in best["params"].items())]
    lines += [f"running: trial {r['number']} on {r['host']} pid {r['pid']} for {r['running_s']} s, "
              f"step {r['last_step']}, eval loss {_short(r['last_value'])}" for r in report["running"]]
    lines += [f"pruned: trial {p['number']} {describe_prune(p)}" for p in report["pruned"]]
    return "\n".join(lines)


def progress(summary: dict) -> list[str]:
    """The search's progress: its configurations, the budget left, the best loss against tokens."""
    c, left = summary["configurations"], summary["left"]
    lines = ["configurations: " + ", ".join(f"{n} {k}" for k, n in c.items() if n)
             + f"; {left['configurations']} more may start"]
    if "tokens" in left:
        lines.append(f"budget left: {left['tokens']:,} training tokens ({left['share']:.0%})")
    curve = summary["best_by_tokens"]
    if curve:
        shown = curve if len(curve) <= 6 else curve[:1] + curve[-5:]
        lines.append("best eval loss by tokens spent: "
                     + " -> ".join(f"{loss:.4f} at {tokens:,}" for tokens, loss in shown))
    return lines


def trials(rows: list[dict]) -> str:
    """`tunefleet trials`: one line per trial."""
    lines = []
    for r in rows:
        value = f"{r['value']:.4f}" if r["value"] is not None else "-"
        tokens = f"{r['cost']['tokens']:,}" if r["cost"].get("tokens") is not None else "-"
        lines.append(f"{r['number']:>4} {r['state']:<8} {value:>8} {tokens:>12} tokens  {r['ended']}")
    return "\n".join(lines)


def trials_csv(rows: list[dict]) -> str:
    """`tunefleet trials --csv`: params as params_NAME columns, the cost as tokens and seconds."""
    flat = [{k: v for k, v in r.items() if k not in ("params", "cost")}
            | {f"params_{k}": v for k, v in r["params"].items()}
            | {"tokens": r["cost"].get("tokens"), "seconds": r["cost"].get("seconds")} for r in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, list(dict.fromkeys(k for r in flat for k in r)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue().rstrip("\n")


def studies(rows: list[dict]) -> str:
    if not rows:
        return "no studies"
    lines = []
    for r in rows:
        best_value = f"{r['best_value']:.4f}" if r["best_value"] is not None else "-"
        lines.append(f"{r['name']}: {r['method']}, {r['complete']} complete, {r['pruned']} pruned, "
                     f"{r['running']} running of {r['n_trials']}; best {best_value}")
    return "\n".join(lines)


def exported(record: dict, merge: bool) -> str:
    return (f"trial {record['trial']} (eval loss {record['value']:.4f} at step {record['step']}) exported to "
            f"{record['out']}" + (" with the merged model" if merge else ""))


def lr_found(found, min_lr: float, out) -> str:
    """`tunefleet lr-find`: how far the range test went and what it suggests."""
    tail = ", stopped on divergence" if found.stopped_early else ""
    return (f"{len(found.lrs)} steps from {min_lr:.0e}{tail}; plot: {out}\n"
            + (f"suggested learning rate: {found.suggestion:.2e}" if found.suggestion else "no suggestion"))


def schedules(lr_curves: dict, warmup: int, steps: int, out) -> str:
    """`tunefleet schedules`: each schedule's rate at a few marks of the run."""
    marks = [0, warmup, steps // 4, steps // 2, 3 * steps // 4, steps - 1]
    lines = [f"{'step':<22}" + "".join(f"{m:>10}" for m in marks)]
    lines += [f"{name:<22}" + "".join(f"{lrs[m]:>10.2e}" for m in marks) for name, lrs in lr_curves.items()]
    return "\n".join(lines + [f"plot: {out}"])


def _gib(n: float) -> str:
    return f"{n / GIB:6.1f} GiB"


def _memory_lines(fit: dict, gpu_gb: float) -> list[str]:
    b = fit["breakdown"]
    lines = [f"peak memory (est.)  {fit['total'] / GIB:.1f} GiB of {gpu_gb * 1e9 / GIB:.1f} GiB per GPU "
             f"at micro-batch {max(fit['micro_batch'], 1)}"]
    for part in ("weights", "gradients", "optimizer", "activations", "overhead"):
        lines.append(f"  {part:<17} {_gib(b[part])}")
    lines.append(f"  trainable params  {b['trainable_parameters']:,}")
    return lines


def _text(r: dict) -> str:
    p = r["params"]
    gpus = r.get("gpus_per_trial", 1)
    head = (f"{r['method']} on a {r['n_params'] / 1e9:.2f}B-parameter model ({r['size_class']}), "
            f"{r['n_examples']:,} examples, {f'{gpus} x ' if gpus > 1 else ''}{r['gpu_memory_gb']:g} GB GPU"
            f"{'s' if gpus > 1 else ''}, {r['seq_len']} tokens per example")
    fit = r["memory"]
    if not fit["fits"]:
        lines = [head, f"does not fit: {r['method']} needs {fit['total'] / GIB:.1f} GiB at micro-batch 1, "
                       f"the GPU has {r['gpu_memory_gb'] * 1e9 / GIB:.1f} GiB", *_memory_lines(fit, r["gpu_memory_gb"])]
        for alt in r["alternatives"]:
            if "seq_len" in alt:
                lines.append(f"fits instead: {alt['method']} at --seq-len {alt['seq_len']}")
            elif "gpus_per_trial" in alt:
                lines.append(f"fits instead: --gpus-per-trial {alt['gpus_per_trial']} (FSDP; micro-batch "
                             f"{alt['micro_batch']}, {alt['total'] / GIB:.1f} GiB per GPU)")
            else:
                lines.append(f"fits instead: --method {alt['method']} (micro-batch {alt['micro_batch']}, "
                             f"{alt['total'] / GIB:.1f} GiB)")
        if not r["alternatives"]:
            lines.append("nothing fits on GPUs of this size")
        return "\n".join(lines)
    a = r["training_arguments"]
    lines = [
        head,
        f"learning rate       {p['learning_rate']:.1e}   (search {r['search_range']['learning_rate'][0]:.0e} .. "
        f"{r['search_range']['learning_rate'][1]:.0e})",
        f"effective batch     {p['batch_size']} = micro-batch {a['per_device_train_batch_size']} x "
        f"accumulation {a['gradient_accumulation_steps']}" + (f" x {gpus} GPUs" if gpus > 1 else ""),
        f"schedule            {p['lr_scheduler_type']}, warmup {a['warmup_steps']} of {r['total_steps']} steps "
        f"({r['epochs']} epochs)",
        f"weight decay        {p['weight_decay']}",
        f"clipping            max_grad_norm {p['max_grad_norm']}",
        f"early stopping      when the best eval loss improves by less than "
        f"{r['early_stopping']['min_improvement']:.1%} over {r['early_stopping']['patience']} evaluations",
    ]
    if r["peft_config"] and r["peft_config"]["peft_type"] == "LORA":
        c = r["peft_config"]
        lines.append(f"LoRA                r {c['r']}, alpha {c['lora_alpha']}, dropout {c['lora_dropout']}, "
                     f"all linear layers")
    if gpus > 1:
        how = "FSDP: weights, gradients and optimizer sharded" if r["sharded"] else "DDP: the base on every GPU"
        lines.append(f"parallelism         {how}, over {gpus} GPUs")
    if r["quantization_config"]:
        lines.append("quantization        4-bit NF4, double quantization, bf16 compute; paged 8-bit AdamW")
    return "\n".join(lines + _memory_lines(fit, r["gpu_memory_gb"]))


def suggestion(r: dict, fmt: str) -> str:
    """`tunefleet suggest`: text for people, JSON or YAML for tools."""
    if fmt == "text":
        return _text(r)
    fit = r["memory"]
    doc = {"fits": fit["fits"], "search_range": r["search_range"],
           "memory_gib": {k: round(v / GIB, 3) for k, v in fit["breakdown"].items() if k != "trainable_parameters"}
           | {"total": round(fit["total"] / GIB, 3)}}
    if fit["fits"]:
        doc.update(training_arguments=r["training_arguments"], peft_config=r["peft_config"],
                   quantization_config=r["quantization_config"])
    else:
        doc["alternatives"] = r["alternatives"]
    if fmt == "json":
        return json.dumps(doc, indent=2)
    import yaml

    return yaml.safe_dump(doc, sort_keys=False)
