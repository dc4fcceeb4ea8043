"""How `tunefleet suggest` shows a recommendation: text for people, JSON or YAML for tools."""

from __future__ import annotations

import json

from spaces.memory import GIB


def _gib(n: float) -> str:
    return f"{n / GIB:6.1f} GiB"


def _memory_lines(fit: dict, gpu_gb: float) -> list[str]:
    b = fit["breakdown"]
    lines = [f"peak memory (est.)  {fit['total'] / GIB:.1f} GiB of {gpu_gb * 1e9 / GIB:.1f} GiB "
             f"at micro-batch {max(fit['micro_batch'], 1)}"]
    for part in ("weights", "gradients", "optimizer", "activations", "overhead"):
        lines.append(f"  {part:<17} {_gib(b[part])}")
    lines.append(f"  trainable params  {b['trainable_parameters']:,}")
    return lines


def _text(r: dict) -> str:
    p = r["params"]
    head = (f"{r['method']} on a {r['n_params'] / 1e9:.2f}B-parameter model ({r['size_class']}), "
            f"{r['n_examples']:,} examples, {r['gpu_memory_gb']:g} GB GPU, {r['seq_len']} tokens per example")
    fit = r["memory"]
    if not fit["fits"]:
        lines = [head, f"does not fit: {r['method']} needs {fit['total'] / GIB:.1f} GiB at micro-batch 1, "
                       f"the GPU has {r['gpu_memory_gb'] * 1e9 / GIB:.1f} GiB", *_memory_lines(fit, r["gpu_memory_gb"])]
        for alt in r["alternatives"]:
            if "seq_len" in alt:
                lines.append(f"fits instead: {alt['method']} at --seq-len {alt['seq_len']}")
            else:
                lines.append(f"fits instead: --method {alt['method']} (micro-batch {alt['micro_batch']}, "
                             f"{alt['total'] / GIB:.1f} GiB)")
        if not r["alternatives"]:
            lines.append("nothing fits on one GPU of this size: shard the model over several GPUs")
        return "\n".join(lines)
    a = r["training_arguments"]
    lines = [
        head,
        f"learning rate       {p['learning_rate']:.1e}   (search {r['search_range']['learning_rate'][0]:.0e} .. "
        f"{r['search_range']['learning_rate'][1]:.0e})",
        f"effective batch     {p['batch_size']} = micro-batch {a['per_device_train_batch_size']} x "
        f"accumulation {a['gradient_accumulation_steps']}",
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
    if r["quantization_config"]:
        lines.append("quantization        4-bit NF4, double quantization, bf16 compute; paged 8-bit AdamW")
    return "\n".join(lines + _memory_lines(fit, r["gpu_memory_gb"]))


def render(r: dict, fmt: str) -> str:
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
