"""Trial overhead: how much of a worker's wall time goes into optimizer steps.

    python -m bench.trial_overhead.run            # 20 trials each, about 10 minutes on 2 cores

One 20-trial LoRA study of the tiny Llama, run twice from a cold process: by
one `tunefleet worker` (warm base model, checkpoints, curves, notes, leases),
and by transformers' `Trainer.hyperparameter_search` with `model_init` (the
model loaded again for every trial; no checkpoints). Same data, trial length
and evaluation. Per trial: time from claim (HF: from model_init) to the first
optimizer step, and seconds inside steps and evaluations. Results go to
bench/trial_overhead/results/<trials>x<steps>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    started = time.time()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-3000:]}")
    return time.time() - started, done.stdout


def tunefleet(model: Path, dataset: Path, a: argparse.Namespace, tmp: Path) -> dict:
    url = f"journal:{tmp / 'journal.log'}"
    cli = [sys.executable, "-m", "search.cli"]
    _run(cli + ["study", "create", "overhead", "--model", str(model), "--dataset", str(dataset), "--method", "lora",
                "--n-trials", str(a.trials), "--max-steps", str(a.max_steps), "--eval-steps", str(a.eval_steps),
                "--seq-len", str(a.seq_len), "--pruner", "none", "--storage", url], tmp)
    wall, _ = _run(cli + ["worker", "overhead", "--threads", str(a.threads), "--storage", url], tmp)
    from storage import open_storage

    study = optuna.load_study(study_name="overhead", storage=open_storage(url))
    rows = [t.user_attrs["tunefleet.timing"] for t in sorted(study.get_trials(), key=lambda t: t.datetime_start)
            if "tunefleet.timing" in t.user_attrs]
    return {"wall_s": round(wall, 2), "trials": rows}


def hf(model: Path, dataset: Path, a: argparse.Namespace, tmp: Path) -> dict:
    _, out = _run([sys.executable, "-m", "bench.trial_overhead.hf_baseline", str(model), str(dataset),
                   str(a.trials), str(a.max_steps), str(a.eval_steps), str(a.seq_len), str(a.threads)], ROOT)
    return json.loads(out.strip().splitlines()[-1])


def summary(result: dict) -> dict:
    trials, wall = result["trials"], result["wall_s"]
    steps, evals = sum(t["steps_s"] for t in trials), sum(t["eval_s"] for t in trials)
    later = [t["claim_to_first_step_s"] for t in trials[1:]]
    return {"trials": len(trials), "wall_s": wall, "steps_share": round(steps / wall, 4),
            "steps_and_eval_share": round((steps + evals) / wall, 4),
            "first_trial_to_first_step_s": trials[0]["claim_to_first_step_s"],
            "later_to_first_step_median_s": round(statistics.median(later), 3) if later else None,
            "checkpoint_s": round(sum(t.get("checkpoint_s", 0) for t in trials), 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.trial_overhead.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--eval-steps", type=int, default=25)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    from workers.tiny import build_assets

    model, dataset = build_assets(HERE / ".cache", pretrain_steps=100)
    with tempfile.TemporaryDirectory(prefix="tunefleet-overhead-") as tmp:
        results = {"tunefleet": tunefleet(model, dataset, a, Path(tmp)), "hf_hyperparameter_search": hf(model, dataset, a, Path(tmp))}
    record = {"config": vars(a), "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
              "summary": {k: summary(v) for k, v in results.items()}, "raw": results}
    out = HERE / "results" / f"{a.trials}x{a.max_steps}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["summary"], indent=1))


if __name__ == "__main__":
    main()
