"""bench/gpu/run.sh --dry: the GPU checks' code path, at tiny sizes on CPU, so that it cannot
rot between the sessions that are lent a GPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_checks_run_dry_and_write_every_figure(tmp_path):
    out = tmp_path / "figures.json"
    ran = subprocess.run(["bash", str(ROOT / "bench/gpu/run.sh"), "--dry", "--out", str(out)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    f = json.loads(out.read_text())
    assert f["dry"] and set(f["seconds"]) == {"qlora_trials", "memory", "out_of_memory", "two_ranks", "total"}
    trials = f["qlora_trials"]["trials"]
    assert len(trials) == 3 and all(t["state"] == "COMPLETE" and t["tokens_per_s"] > 0 and
                                    0 < t["steps_share"] < 1 and t["claim_to_first_step_s"] >= 0 for t in trials)
    rows = {(r["method"], r["micro_batch"]) for r in f["memory"]}
    assert rows == {(m, b) for m in ("lora", "qlora", "full") for b in (1, 2)}
    qlora = next(r for r in f["memory"] if r["method"] == "qlora")
    assert qlora["linear_4bit_modules"] > 0 and "8-bit, paged" in qlora["optimizer"], qlora
    assert all(r["estimated_gib"] > 0 and r["measured_gib"] is None for r in f["memory"]), "CPU: no allocator peak"
    oom = f["out_of_memory"]
    assert oom["state"] == "COMPLETE" and oom["batch"]["oom_retries"] == 2 and oom["batch"]["micro_batch"] == 2
    assert f["two_ranks"]["lora"]["world_size"] == 2 and f["two_ranks"]["lora"]["state"] == "COMPLETE"
