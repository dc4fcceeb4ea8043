"""The GPU paths the CPU tests cannot reach, measured in one run (`bench/gpu/run.sh`).

    bash bench/gpu/run.sh                 # one H100/H200: under 8 minutes, writes bench/gpu/results/<date>.json
    bash bench/gpu/run.sh --dry --out F   # the same code path at tiny sizes on CPU (run by the test suite)

What it measures, each through the product's own code (the CLI's worker, or the worker's
own Resident and Trainer builder), on a Llama of 1.1B parameters built from a config with
random weights (nothing is downloaded) and a tokenizer trained here:
- qlora_trials: three QLoRA trials by one `tunefleet worker` (4-bit NF4 base, paged 8-bit
  AdamW): claim-to-first-step seconds, the share of each trial's time in optimizer steps,
  training tokens per second, the allocator's peak.
- memory: for LoRA, QLoRA and full fine-tuning at two micro-batches, the allocator's peak
  over a few optimizer steps on examples of the full sequence length, against
  spaces/memory.py's estimate (without its CUDA-context overhead, which the allocator
  does not see).
- out_of_memory: a real out-of-memory error and the back-off after it: the worker sizes
  the micro-batch from the device's free memory, while this process's allocator is capped
  below that (torch.cuda.set_per_process_memory_fraction, from a sitecustomize), so the
  first micro-batch fails in the allocator and the worker halves it until it fits. On CPU
  (--dry) the error is injected (`--inject-oom-above`), the back-off is the same code.
- two_ranks: with two GPUs (or, --dry, two CPU ranks), a LoRA trial on 2 ranks (DDP), and
  on GPUs a QLoRA trial (DDP, a 4-bit base on each GPU) and a full fine-tuning trial (FSDP2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass(frozen=True)
class Sizes:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    seq_len: int
    micro_batches: tuple[int, int]
    steps: int  # per QLoRA trial
    oom_batch: int  # the out-of-memory check's effective batch (and first micro-batch)
    oom_cap_gib: float


# TinyLlama's shape (1.1B parameters at a 32k vocabulary; 1.03B at this tokenizer's 16k).
REAL = Sizes(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632, vocab=16384, seq_len=1024,
             micro_batches=(1, 4), steps=30, oom_batch=64, oom_cap_gib=16.0)
DRY = Sizes(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=192, vocab=512, seq_len=64,
            micro_batches=(1, 2), steps=10, oom_batch=8, oom_cap_gib=0.0)


def build(sizes: Sizes, root: Path) -> tuple[Path, Path, Path]:
    """(model dir, prompt/completion JSONL, long-text JSONL): a Llama from a config with random
    bf16 weights, a BPE tokenizer trained on the standard library's docstrings."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workers.tiny import stdlib_texts, train_tokenizer

    prose, pairs = stdlib_texts()
    tokenizer = train_tokenizer(prose + [p["prompt"] + p["completion"] for p in pairs], sizes.vocab)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=sizes.hidden, intermediate_size=sizes.intermediate,
                         num_hidden_layers=sizes.layers, num_attention_heads=sizes.heads,
                         num_key_value_heads=sizes.kv_heads, max_position_embeddings=max(2048, sizes.seq_len),
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    pairs_file, long_file = root / "pairs.jsonl", root / "long.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs[:2000]))
    # Examples at least seq_len tokens long, so that every micro-batch is as large as the estimate assumes.
    text = " ".join(prose)
    width = sizes.seq_len * 8  # characters: BPE tokens are shorter than 8 on this text
    long_file.write_text("".join(json.dumps({"text": text[i:i + width]}) + "\n"
                                 for i in range(0, min(len(text) - width, 256 * width), width)))
    return model_dir, pairs_file, long_file


def _cli(*args, env: dict | None = None, cwd: Path) -> str:
    env = dict(env or {})  # its PYTHONPATH goes first, then the checkout, then the caller's (the wheels')
    path = os.pathsep.join(filter(None, [env.pop("PYTHONPATH", None), str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "search.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **env, "PYTHONPATH": path})
    if done.returncode != 0:
        raise SystemExit(f"tunefleet {' '.join(map(str, args[:3]))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stderr


def _study(work: Path, name: str):
    import optuna

    from storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{work / '.tunefleet/journal.log'}"))


def _space(work: Path, name: str, space: dict) -> Path:
    path = work / f"{name}-space.json"
    path.write_text(json.dumps(space))
    return path


def qlora_trials(model: Path, pairs: Path, sizes: Sizes, work: Path) -> dict:
    _cli("study", "create", "qlora", "--model", model, "--dataset", pairs, "--method", "qlora", "--n-trials", 3,
         "--max-steps", sizes.steps, "--eval-steps", sizes.steps // 3, "--seq-len", sizes.seq_len // 2,
         "--pruner", "none", cwd=work)
    log = _cli("worker", "qlora", cwd=work)
    rows = []
    for t in sorted(_study(work, "qlora").get_trials(), key=lambda t: t.number):
        timing, cost, batch = (t.user_attrs.get(k, {}) for k in ("tunefleet.timing", "tunefleet.cost", "tunefleet.batch"))
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "batch_size": t.params["batch_size"],
                     "micro_batch": batch.get("micro_batch"), "peak_memory_gib": batch.get("peak_memory_gib"),
                     "claim_to_first_step_s": timing.get("claim_to_first_step_s"),
                     "steps_share": timing and round(timing["steps_s"] / timing["trial_s"], 3),
                     "tokens_per_s": timing and round(cost["tokens"] / timing["steps_s"], 1)})
    return {"trials": rows, "log_tail": log.strip().splitlines()[-3:]}


def memory(model: Path, long: Path, sizes: Sizes, work: Path) -> list[dict]:
    """Measured peaks against the estimate, through the worker's own builders."""
    import torch

    from spaces import memory as estimate
    from spaces.model import dimensions, parameter_count, read_model_config
    from spaces.space import starting_configs
    from search.study import space_of
    from workers.inputs import spec_from_inputs
    from workers.train import Resident, build_trainer

    dims = dimensions(read_model_config(model))
    n_params, n_embedding = parameter_count(model)
    rows = []
    for method in ("lora", "qlora", "full"):
        for micro in sizes.micro_batches:
            spec = spec_from_inputs(str(model), str(long), method, max_steps=3, eval_steps=3, seq_len=sizes.seq_len,
                                    max_micro_batch=micro, max_eval_examples=micro)
            params = {**starting_configs(method, space_of(spec), spec.hidden_size)[0], "batch_size": micro}
            resident = Resident(spec)
            model_ = resident.model_for(params)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            trainer = build_trainer(spec, params, resident.data, model_, micro, 3, str(work / f"mem-{method}-{micro}"), [])
            trainer.train()
            seconds = time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
            extra = {k: params[k] for k in ("lora_r",) if k in params}
            parts = estimate.estimate(method, dims, n_params, n_embedding, micro, sizes.seq_len, checkpointing=False,
                                      **extra)
            predicted = estimate.total(parts) - parts["overhead"]
            four_bit = sum(type(m).__name__ == "Linear4bit" for m in model_.modules())
            rows.append({"method": method, "micro_batch": micro, "seq_len": sizes.seq_len,
                         "optimizer": _name(getattr(trainer.optimizer, "optimizer", trainer.optimizer)),
                         "linear_4bit_modules": four_bit,
                         "measured_gib": peak and round(peak / 2 ** 30, 3),
                         "estimated_gib": round(predicted / 2 ** 30, 3),
                         "measured_over_estimated": peak and round(peak / predicted, 3),
                         "tokens_per_s": round(3 * micro * sizes.seq_len / seconds, 1),
                         "estimate": {k: round(v / 2 ** 30, 3) for k, v in parts.items() if k != "trainable_parameters"}})
            del trainer, model_, resident
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def _name(optimizer) -> str:
    """The optimizer's class, and its state's bits when bitsandbytes keeps them in 8."""
    bits = getattr(optimizer, "args", None) and getattr(optimizer.args, "optim_bits", None)
    paged = getattr(optimizer, "is_paged", False)
    return f"{type(optimizer).__module__}.{type(optimizer).__name__}" + (f" ({bits}-bit{', paged' if paged else ''})"
                                                                         if bits else "")


def out_of_memory(model: Path, long: Path, sizes: Sizes, work: Path, dry: bool) -> dict:
    _cli("study", "create", "oom", "--model", model, "--dataset", long, "--method", "lora", "--n-trials", 1,
         "--max-steps", 4, "--eval-steps", 4, "--seq-len", sizes.seq_len, "--max-micro-batch", sizes.oom_batch,
         "--pruner", "none", "--space", _space(work, "oom", {"batch_size": {"value": sizes.oom_batch}}), cwd=work)
    if dry:
        log = _cli("worker", "oom", "--inject-oom-above", sizes.oom_batch // 4, cwd=work)
        how = f"injected above micro-batch {sizes.oom_batch // 4}"
    else:  # the allocator capped below what the worker sees free
        cap = work / "cap"
        cap.mkdir(exist_ok=True)
        (cap / "sitecustomize.py").write_text(
            "import torch\n"
            f"torch.cuda.set_per_process_memory_fraction({sizes.oom_cap_gib} * 2**30 / "
            "torch.cuda.get_device_properties(0).total_memory)\n")
        log = _cli("worker", "oom", env={"PYTHONPATH": str(cap)}, cwd=work)
        how = f"allocator capped at {sizes.oom_cap_gib:g} GiB"
    (trial,) = _study(work, "oom").get_trials()
    return {"how": how, "state": trial.state.name, "batch": trial.user_attrs.get("tunefleet.batch"),
            "log_tail": log.strip().splitlines()[-2:]}


def two_ranks(model: Path, pairs: Path, sizes: Sizes, work: Path, dry: bool) -> dict:
    import torch

    if not dry and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU(s): a 2-rank trial needs 2"}
    out = {}
    for method in ("lora",) if dry else ("lora", "qlora", "full"):
        name = f"ranks-{method}"
        _cli("study", "create", name, "--model", model, "--dataset", pairs, "--method", method, "--n-trials", 1,
             "--max-steps", sizes.steps, "--eval-steps", sizes.steps // 2, "--seq-len", sizes.seq_len // 2,
             "--pruner", "none", cwd=work)
        started = time.perf_counter()
        _cli("worker", name, "--gpus-per-trial", 2, *(["--threads", 1] if dry else []), cwd=work)
        (trial,) = _study(work, name).get_trials()
        timing, cost = trial.user_attrs.get("tunefleet.timing", {}), trial.user_attrs.get("tunefleet.cost", {})
        out[method] = {"state": trial.state.name, "value": trial.value,
                       "world_size": trial.user_attrs["tunefleet.worker"].get("world_size"),
                       "batch": trial.user_attrs.get("tunefleet.batch"), "wall_s": round(time.perf_counter() - started, 1),
                       "tokens_per_s": timing and round(cost["tokens"] / timing["steps_s"], 1)}
    return out


def machine() -> dict:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"gpus": gpus, "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="tiny sizes on CPU: the same code path, for the test suite")
    p.add_argument("--out", type=Path, help="the JSON of figures (default bench/gpu/results/DATE.json)")
    a = p.parse_args(argv)
    import torch

    if not a.dry and not torch.cuda.is_available():
        p.error("no CUDA device: run it on a GPU machine, or with --dry")
    sizes = DRY if a.dry else REAL
    out = a.out or HERE / "results" / f"{time.strftime('%Y-%m-%d')}.json"
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tunefleet-gpu-") as tmp:
        work = Path(tmp)
        model, pairs, long = build(sizes, work)
        from spaces.model import parameter_count

        figures = {"date": time.strftime("%Y-%m-%d %H:%M"), "dry": a.dry, "machine": machine(),
                   "sizes": asdict(sizes), "parameters": parameter_count(model)[0]}
        for key, check in (("qlora_trials", lambda: qlora_trials(model, pairs, sizes, work)),
                           ("memory", lambda: memory(model, long, sizes, work)),
                           ("out_of_memory", lambda: out_of_memory(model, long, sizes, work, a.dry)),
                           ("two_ranks", lambda: two_ranks(model, pairs, sizes, work, a.dry))):
            t0 = time.time()
            figures[key] = check()
            figures.setdefault("seconds", {})[key] = round(time.time() - t0, 1)
            print(f"{key}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    figures["seconds"]["total"] = round(time.time() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    print(f"figures in {out} ({figures['seconds']['total']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
