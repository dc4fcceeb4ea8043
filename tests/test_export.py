"""`tunefleet export`: the best trial's kept weights come back as a model that loads on the
base and measures the eval loss the trial reported; the merged model too; the TRL config runs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
import yaml
from test_bad_input import assert_one_line_error

from conftest import cli_env, tunefleet


def _eval_loss(model, spec, tokenizer) -> float:
    """The study's eval split measured as the trial's Trainer measured it (the study's eval batch)."""
    from transformers import Trainer, TrainingArguments

    from workers.data import Collator, train_eval_split

    _, eval_examples = train_eval_split(spec, tokenizer)
    args = TrainingArguments(output_dir=str(spec.dataset) + ".eval", per_device_eval_batch_size=spec.max_micro_batch,
                             report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, eval_dataset=eval_examples, data_collator=Collator(tokenizer.pad_token_id))
    return trainer.evaluate()["eval_loss"]


def test_the_exported_adapter_reproduces_the_trials_eval_loss(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from search.study import load
    from storage import open_storage

    url = f"journal:{tmp_path / 'j.log'}"
    dataset = tmp_path / "d.jsonl"
    shutil.copy(tiny[1], dataset)
    assert tunefleet("study", "create", "x", "--model", tiny[0], "--dataset", dataset, "--method", "lora",
                     "--n-trials", 2, "--max-steps", 6, "--eval-steps", 2, "--seq-len", 48, "--pruner", "none",
                     "--keep-best", 1, "--storage", url, cwd=tmp_path).returncode == 0
    assert tunefleet("worker", "x", "--threads", 1, "--storage", url, cwd=tmp_path).returncode == 0
    study, spec = load(open_storage(url), "x")
    assert spec.keep_best == 1
    complete = sorted((t for t in study.get_trials() if t.state.name == "COMPLETE"), key=lambda t: t.value)
    other = [t for t in study.get_trials() if t.number != complete[0].number][0]
    assert_one_line_error(tunefleet("export", "x", "--out", tmp_path / "o", "--trial", other.number,
                                    "--storage", url, cwd=tmp_path), "kept no checkpoint", "--keep-best")

    out = tmp_path / "best"
    done = tunefleet("export", "x", "--out", out, "--merge", "--json", "--storage", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    best = complete[0]
    assert record["trial"] == best.number and record["value"] == best.value
    assert {p.name for p in out.iterdir()} >= {"adapter", "merged", "training_args.json", "peft_config.json",
                                                 "trl_sft.yaml", "README.md"}
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == spec.model
    assert not (out / "adapter" / "optimizer.pt").exists(), "weights only"

    tokenizer = AutoTokenizer.from_pretrained(out / "adapter")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(spec.model_dir()), out / "adapter")
    assert math.isclose(_eval_loss(model, spec, tokenizer), best.value, abs_tol=1e-3)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert math.isclose(_eval_loss(merged, spec, tokenizer), best.value, abs_tol=1e-3)

    from peft import get_peft_config
    from transformers import TrainingArguments

    args = json.loads((out / "training_args.json").read_text())
    assert args["learning_rate"] == best.params["learning_rate"]
    TrainingArguments(output_dir=str(tmp_path / "t"), **args)  # the Trainer's own arguments, as they are
    assert get_peft_config(json.loads((out / "peft_config.json").read_text())).r == best.params["lora_r"]
    readme = (out / "README.md").read_text()
    assert f"{best.value:.4f}" in readme and "PeftModel.from_pretrained" in readme

    # TRL runs the exported config (two steps here, no eval) and leaves an adapter of the same rank.
    trl = yaml.safe_load((out / "trl_sft.yaml").read_text())
    assert (trl["model_name_or_path"], trl["lora_r"], trl["max_steps"]) == (spec.model, best.params["lora_r"], 6)
    ran = subprocess.run([sys.executable, "-c", "import sys; from trl.cli import main; sys.exit(main())", "sft", "--config", str(out / "trl_sft.yaml"),
                          "--max_steps", "2", "--eval_strategy", "no", "--output_dir", str(tmp_path / "trl"),
                          "--use_cpu", "true", "--bf16", "false"],
                         cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads((tmp_path / "trl" / "adapter_config.json").read_text())["r"] == best.params["lora_r"]

    assert_one_line_error(tunefleet("export", "x", "--out", out, "--storage", url, cwd=tmp_path), "not empty")


@pytest.mark.parametrize("bad", [[], ["--trial", 99], ["--merge"]])
def test_export_refuses_what_it_cannot_write(tiny, tmp_path, bad):
    url = f"journal:{tmp_path / 'j.log'}"
    assert tunefleet("study", "create", "f", "--model", tiny[0], "--dataset", tiny[1], "--method", "full",
                     "--n-trials", 1, "--max-steps", 2, "--storage", url, cwd=tmp_path).returncode == 0
    result = tunefleet("export", "f", "--out", tmp_path / "o", *bad, "--storage", url, cwd=tmp_path)
    assert_one_line_error(result, "no trial 99" if "--trial" in bad else "--merge needs a LoRA or QLoRA study"
                          if bad else "has no complete trial yet")
