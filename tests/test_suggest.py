"""`tunefleet suggest` on known inputs, and the memory formula it uses."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import tunefleet

from spaces import memory

LLAMA_3_8B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
              "tie_word_embeddings": False, "hidden_act": "silu"}
DIMS = {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336, "vocab": 128256}
P, E = 8_030_261_248, 2 * 128256 * 4096


@pytest.fixture
def llama8b(tmp_path):
    model = tmp_path / "llama-3-8b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_3_8B))
    (model / "tokenizer.json").write_text("{}")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"example {i}"}) + "\n" for i in range(5000)))
    return model, data


def test_lora_trainable_parameters_match_peft():
    # r=16 on all seven linear layers of Llama 3 8B: peft reports 41,943,040.
    assert memory.trainable_parameters("lora", DIMS, P, lora_r=16) == 41_943_040


def test_memory_components():
    full = memory.estimate("full", DIMS, P, E, micro_batch=1, seq_len=2048)
    assert full["weights"] == 2 * P and full["gradients"] == 2 * P and full["optimizer"] == 12 * P
    qlora = memory.estimate("qlora", DIMS, P, E, micro_batch=1, seq_len=2048)
    assert 5.0 * memory.GIB < qlora["weights"] < 6.0 * memory.GIB  # 4-bit base, bf16 embeddings
    one, two = (memory.estimate("lora", DIMS, P, E, b, 2048)["activations"] for b in (1, 2))
    assert two == 2 * one, "activations scale with the micro-batch"
    no_ckpt = memory.estimate("lora", DIMS, P, E, 1, 2048, checkpointing=False)["activations"]
    s, h, layers = 2048, 4096, 32  # checkpointing keeps each layer's input and recomputes one layer at a time
    assert no_ckpt - one == 34 * s * h * layers - (2 * s * h * layers + 34 * s * h)


def test_a_trial_over_several_gpus_shards_full_fine_tuning_and_not_adapters():
    full, sharded = (memory.estimate("full", DIMS, P, E, 1, 2048, ranks=r) for r in (1, 4))
    assert sharded["weights"] == 2 * P / 4 + 2 * (2 * P / 32), "a quarter, plus two layers gathered"
    assert sharded["gradients"] == full["gradients"] / 4 and sharded["optimizer"] == full["optimizer"] / 4
    assert sharded["activations"] == full["activations"], "activations are the rank's own micro-batch"
    lora, ddp = (memory.estimate("lora", DIMS, P, E, 1, 2048, ranks=r) for r in (1, 2))
    assert ddp["weights"] == lora["weights"] and ddp["gradients"] == 2 * lora["gradients"], "DDP's buckets"


def test_full_8b_needs_two_80gb_gpus_and_suggest_says_so(llama8b):
    model, data = llama8b
    alone = tunefleet("suggest", "--model", model, "--method", "full", "--dataset", data, "--gpu-memory", 80)
    assert alone.returncode == 1 and "fits instead: --gpus-per-trial 2 (FSDP" in alone.stdout, alone.stdout
    four = tunefleet("suggest", "--model", model, "--method", "full", "--dataset", data, "--gpu-memory", 80,
                     "--gpus-per-trial", 4, "--format", "json")
    assert four.returncode == 0, four.stdout + four.stderr
    args = json.loads(four.stdout)["training_arguments"]
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * 4 == 16
    text = tunefleet("suggest", "--model", model, "--method", "full", "--dataset", data, "--gpu-memory", 80,
                     "--gpus-per-trial", 4).stdout
    assert "4 x 80 GB GPUs" in text and "FSDP" in text and "x 4 GPUs" in text
    odd = tunefleet("suggest", "--model", model, "--method", "full", "--dataset", data, "--gpu-memory", 80,
                    "--gpus-per-trial", 3)
    assert odd.returncode == 2 and "does not split over 3 ranks" in odd.stderr and "Traceback" not in odd.stderr


def test_full_8b_on_24gb_is_infeasible_and_says_what_fits(llama8b):
    model, data = llama8b
    result = tunefleet("suggest", "--model", model, "--method", "full", "--dataset", data, "--gpu-memory", 24)
    assert result.returncode == 1, result.stderr
    assert "does not fit" in result.stdout and "Traceback" not in result.stderr
    assert "fits instead: --method lora" in result.stdout and "fits instead: --method qlora" in result.stdout


def test_lora_8b_on_24gb(llama8b):
    model, data = llama8b
    result = tunefleet("suggest", "--model", model, "--method", "lora", "--dataset", data, "--gpu-memory", 24)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "medium" in out and "learning rate       2.0e-04" in out
    assert "effective batch     16 = micro-batch 1 x accumulation 16" in out
    assert "warmup 28 of 939 steps (3 epochs)" in out
    for part in ("weights", "gradients", "optimizer", "activations", "overhead"):
        assert part in out


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_machine_readable_formats(llama8b, fmt):
    model, data = llama8b
    result = tunefleet("suggest", "--model", model, "--method", "qlora", "--dataset", data,
                       "--gpu-memory", 24, "--format", fmt)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout) if fmt == "json" else yaml.safe_load(result.stdout)
    args = doc["training_arguments"]
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 16
    assert args["optim"] == "paged_adamw_8bit" and args["max_grad_norm"] == 0.3 and args["learning_rate"] == 2e-4
    assert doc["peft_config"]["r"] == 16 and doc["quantization_config"]["bnb_4bit_use_double_quant"]
    assert doc["memory_gib"]["total"] <= 24e9 / memory.GIB


def test_suggest_on_a_real_saved_model(tiny):
    model, data = tiny
    result = tunefleet("suggest", "--model", model, "--method", "prefix", "--dataset", data, "--gpu-memory", 8,
                       "--seq-len", 256, "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["peft_config"]["peft_type"] == "PREFIX_TUNING"
    # Width-scaled (hidden 64), at the batch centre 8 of a small dataset (prefix rates are stated at 16).
    assert doc["training_arguments"]["learning_rate"] == pytest.approx(1e-2 * 1024 / 64 * 0.5 ** 0.5)


def test_suggest_bad_method_is_one_line(llama8b):
    model, data = llama8b
    result = tunefleet("suggest", "--model", model, "--method", "dora", "--dataset", data, "--gpu-memory", 24)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "unknown method" in result.stderr


def test_suggest_at_a_given_batch_scales_the_learning_rate_and_says_what_it_would_search(llama8b):
    model, data = llama8b
    docs = {}
    for batch in (16, 128):
        result = tunefleet("suggest", "--model", model, "--method", "lora", "--dataset", data, "--gpu-memory", 80,
                           "--batch-size", batch, "--format", "json")
        assert result.returncode == 0, result.stderr
        docs[batch] = json.loads(result.stdout)
    lr16, lr128 = (docs[b]["training_arguments"]["learning_rate"] for b in (16, 128))
    assert lr128 == pytest.approx(lr16 * 8 ** 0.5) and 3e-4 <= lr128 <= 1e-3
    args = docs[128]["training_arguments"]
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 128
    low, high = docs[128]["search_range"]["learning_rate"]
    assert low < lr128 < high and low <= 3e-4 and high >= 1e-3, "the published optima are searched"
    assert docs[128]["search_range"]["batch_size"] == [128] and "lora_r" in docs[128]["search_range"]
