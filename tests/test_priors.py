"""Every value docs/priors.md publishes is what spaces/ returns; the space builder
and its overrides; model size from the weights' headers."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from spaces import priors
from spaces.errors import InputError
from spaces.model import _config_counts, parameter_count
from spaces.space import build_space, prior_space

DOC = (Path(__file__).parent.parent / "docs" / "priors.md").read_text()


def _table(heading: str) -> list[list[str]]:
    section = DOC.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_learning_rate_table_is_the_code():
    rows = _table("Learning rate by method and model size")
    assert len(rows) == 16
    for method, size, low, high, centre in rows:
        assert priors.LEARNING_RATE[method][size] == (float(low), float(high), float(centre)), (method, size)
    assert f"Confidence of the learning-rate prior: {priors.LEARNING_RATE_CONFIDENCE}" in DOC


@pytest.mark.parametrize("n_params, size", [(1.1e8, "small"), (7e9, "medium"), (1.3e10, "large"), (7e10, "xlarge")])
def test_size_classes(n_params, size):
    assert priors.size_class(n_params) == size
    lr = priors.learning_rate("lora", n_params)
    assert (lr.low, lr.high, lr.centre) == priors.LEARNING_RATE["lora"][size] and lr.log


def test_other_hyperparameters_table_is_the_code():
    rows = {r[0]: r for r in _table("The other hyperparameters")}
    space = prior_space("lora", 7e9, 5_000)
    for name in ("lr_scheduler_type", "warmup_ratio", "weight_decay", "max_grad_norm", "lora_r", "lora_dropout"):
        _, values, centre, confidence, _ = rows[name]
        p = space[name]
        assert float(confidence) == p.confidence, name
        assert centre.split(" ")[0] == str(p.centre), name
        if p.choices:
            assert [c.strip() for c in values.split(",")] == [str(c) for c in p.choices], name
        else:
            assert [float(v) for v in values.split("..")] == [p.low, p.high], name
    assert space["batch_size"].centre == 16 and space["batch_size"].choices == (8, 16, 32, 64)
    assert prior_space("qlora", 7e9, 500)["max_grad_norm"].centre == 0.3
    assert rows["num_virtual_tokens (prefix)"][2] == str(prior_space("prefix", 7e9, 500)["num_virtual_tokens"].centre)


def test_reconciliation_rules_are_encoded():
    assert priors.OVERFITTING == {"ratio": 1.5, "gap": 0.1}
    assert priors.EARLY_STOPPING["patience"] == 3
    assert [priors.epochs(n) for n in (500, 5_000, 50_000)] == [5, 3, 2]
    # QLoRA paper: 2e-4 for 7B and 13B, 1e-4 for 33B and 65B.
    assert [priors.learning_rate("qlora", n).centre for n in (7e9, 1.3e10, 3.3e10, 6.5e10)] == [2e-4, 2e-4, 1e-4, 1e-4]
    assert "cosine_with_restarts" not in priors.SCHEDULER.choices


def test_space_depends_on_method_size_and_data():
    small, big = build_space("full", 1e8, 500), build_space("full", 7e10, 500_000)
    # At each space's batch centre (8 and 64), from the full fine-tuning rates stated at batch 128.
    assert small["learning_rate"].centre == pytest.approx(5e-5 * (8 / 128) ** 0.5)
    assert big["learning_rate"].centre == pytest.approx(5e-6 * (64 / 128) ** 0.5)
    assert small["batch_size"].choices == (4, 8, 16, 32) and big["batch_size"].choices == (32, 64, 128, 256)
    assert "lora_r" not in small and "num_virtual_tokens" in build_space("prefix", 1e8, 500)


def test_overrides_narrow_widen_and_fix():
    space = build_space("lora", 7e9, 500, {
        "learning_rate": {"low": 1e-6, "high": 1e-2, "centre": 1e-3, "confidence": 0.9},
        "batch_size": {"choices": [8, 16]},
        "lr_scheduler_type": "linear",
        "lora_r": {"value": 8},
    })
    lr = space["learning_rate"]
    assert (lr.low, lr.high, lr.centre, lr.confidence, lr.log) == (1e-6, 1e-2, 1e-3, 0.9, True)
    assert space["batch_size"].choices == (8, 16) and space["batch_size"].centre == 8
    assert space["lr_scheduler_type"].choices == ("linear",)
    assert space["lora_r"].choices == (8,)


@pytest.mark.parametrize("overrides, key", [
    ({"learnin_rate": {"low": 1e-5}}, "learnin_rate"),
    ({"lora_r": {"value": 8}}, "lora_r"),  # not a parameter of full fine-tuning
    ({"learning_rate": {"low": 1e-3, "high": 1e-4}}, "learning_rate"),
    ({"learning_rate": {"high": 3.0}}, "learning_rate"),
    ({"weight_decay": {"low": 0.1, "high": 0.1}}, "weight_decay"),
    ({"warmup_ratio": {"value": -0.1}}, "warmup_ratio"),
    ({"batch_size": {"choices": []}}, "batch_size"),
    ({"batch_size": {"low": 4, "high": 64}}, "batch_size"),
    ({"lr_scheduler_type": "sawtooth"}, "lr_scheduler_type"),
    ({"learning_rate": {"centre": 1.0}}, "learning_rate"),
    ({"learning_rate": {"lo": 1e-5}}, "learning_rate"),
])
def test_bad_overrides_name_the_key(overrides, key):
    with pytest.raises(InputError, match=re.escape(key)):
        build_space("full", 7e9, 500, overrides)


def _write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * offset)


def test_parameter_count_from_headers_without_loading(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "tokenizer.json").write_text("{}")
    _write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"model.embed_tokens.weight": [100, 8]})
    _write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"model.layers.0.w": [8, 8], "lm_head.weight": [100, 8]})
    assert parameter_count(tmp_path) == (1664, 1600)


def test_parameter_count_of_llama_3_8b_from_its_config():
    config = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
              "tie_word_embeddings": False, "hidden_act": "silu"}
    total, embeddings = _config_counts(config)
    assert total == 8_030_261_248 and embeddings == 2 * 128256 * 4096


def test_narrow_models_get_mup_scaled_learning_rates():
    assert priors.width_factor(4096) == priors.width_factor(1024) == priors.width_factor(0) == 1.0
    lr = priors.learning_rate("lora", 1.6e5, hidden_size=64)
    assert (lr.low, lr.high, lr.centre) == pytest.approx((1.6e-4, 8e-2, 8e-3))
    assert priors.learning_rate("full", 1.6e5, hidden_size=64).centre == pytest.approx(8e-4)
    # LoRA's rates are stated at batch 16; the space's batch centre for 500 examples is 8.
    assert build_space("lora", 1.6e5, 500, hidden_size=64)["learning_rate"].centre == pytest.approx(8e-3 * 0.5 ** 0.5)


def test_every_learning_rate_range_reaches_ten_times_its_centre():
    for method, by_size in priors.LEARNING_RATE.items():
        for size, (low, high, centre) in by_size.items():
            assert low < centre and high >= 10 * centre * 0.999, (method, size)


def test_a_centre_the_user_sets_is_what_the_starting_config_uses():
    from spaces.space import starting_configs

    overrides = {"learning_rate": {"centre": 1e-3}, "lora_r": 8, "weight_decay": {"low": 0.0, "high": 0.05}}
    space = build_space("lora", 7e9, 500, overrides)
    (config,) = starting_configs("lora", space, 0, overrides)
    # The user's centre is at the space's batch centre (8); the starting config trains at 16.
    assert config["learning_rate"] == pytest.approx(1e-3 * 2 ** 0.5) and config["lora_r"] == 8 and config["weight_decay"] == 0.01


def test_a_centre_the_user_sets_is_what_the_first_trial_uses():
    from search.prior import Prior

    overrides = {"learning_rate": {"centre": 1e-3}, "lora_r": 8, "weight_decay": {"low": 0.02, "high": 0.05}}
    config = Prior(build_space("lora", 7e9, 500, overrides)).mode()
    # The user's centre, at the space's batch centre; a centre outside the user's range moves to its edge.
    assert config["learning_rate"] == 1e-3 and config["lora_r"] == 8 and config["weight_decay"] == 0.02


# Published learning-rate sweeps and recipes on real open LLMs (docs/priors.md, "Published
# learning rates"): (method, parameters, effective batch, the best or used learning rate).
PUBLISHED = [
    ("lora", 1.24e9, 128, 1e-3), ("lora", 3.2e9, 128, 1e-3), ("lora", 8.0e9, 128, 3e-4),  # Llama 3.x
    ("lora", 4.0e9, 128, 1e-3), ("lora", 8.2e9, 128, 1e-3), ("lora", 32.8e9, 128, 3e-4),  # Qwen3
    ("lora", 70.6e9, 128, 3e-4),  # Llama-3.1-70B
    ("qlora", 6.7e9, 16, 2e-4), ("qlora", 13e9, 16, 2e-4), ("qlora", 32.5e9, 16, 1e-4), ("qlora", 65.2e9, 16, 1e-4),
    ("full", 6.7e9, 128, 2e-5), ("full", 7.2e9, 128, 2e-5), ("full", 8.0e9, 128, 5e-6),  # Alpaca, Zephyr, Tulu 3
    ("full", 13e9, 128, 2e-5), ("full", 70.6e9, 128, 2e-6),  # Vicuna-13B, Tulu 3 70B
]


@pytest.mark.parametrize("method, n_params, batch, published", PUBLISHED)
def test_published_optima_lie_in_the_range_near_the_centre(method, n_params, batch, published):
    lr = priors.learning_rate(method, n_params, hidden_size=4096, batch_size=batch)
    assert lr.low <= published <= lr.high
    assert 1 / 4 <= lr.centre / published <= 4, "within the published grids' own spacing (about 3x) and a bit"


def test_lora_at_batch_128_sits_where_the_published_sweep_found_its_best():
    # tinker-cookbook's sweep over Llama 3 and Qwen3 models of 1B to 70B at batch 128: 3e-4 .. 1e-3.
    for n_params in (1.24e9, 8e9, 14e9, 32.8e9, 70.6e9):
        assert 3e-4 <= priors.learning_rate("lora", n_params, 4096, 128).centre <= 1e-3, n_params


def test_the_learning_rate_grows_as_the_square_root_of_the_batch():
    at16, at64 = (priors.learning_rate("lora", 8e9, 4096, b).centre for b in (16, 64))
    assert at64 == pytest.approx(2 * at16)
    space = build_space("lora", 8e9, 5_000)
    lr = space["learning_rate"]
    assert lr.centre_for(64) == pytest.approx(2 * lr.centre_for(16))
    assert lr.low == pytest.approx(priors.learning_rate("lora", 8e9, 0, 8).low)
    assert lr.high == pytest.approx(priors.learning_rate("lora", 8e9, 0, 64).high)


def test_config_counts_honour_an_explicit_head_dim():
    # Qwen3-0.6B: 16 heads x head_dim 128 = 2048, twice the hidden size 1024. Its model card:
    # 0.6B parameters, 0.44B of them outside the embeddings (tied).
    qwen3 = {"model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072, "vocab_size": 151936,
             "tie_word_embeddings": True, "hidden_act": "silu"}
    total, embeddings = _config_counts(qwen3)
    assert embeddings == 151936 * 1024
    assert total - embeddings == pytest.approx(0.44e9, rel=0.01) and total == pytest.approx(0.6e9, rel=0.01)
    from spaces.memory import trainable_parameters
    from spaces.model import dimensions

    # LoRA r=8 on q (1024 -> 2048), k and v (1024 -> 1024), o (2048 -> 1024), gate, up, down, 28 layers.
    per_layer = 8 * ((1024 + 2048) * 2 + (1024 + 1024) * 2 + (1024 + 3072) * 3)
    assert trainable_parameters("lora", dimensions(qwen3), total, lora_r=8) == 28 * per_layer


def test_the_batch_tier_follows_the_examples_a_trial_trains_on():
    from spaces.priors import batch_tier

    # The seeds' tiers hold for their own epochs (5 below 1k examples, 3 to 10k, 2 above) ...
    assert [batch_tier(n, e) for n, e in ((500, 5), (5_000, 3), (50_000, 2))] == [(8, 16), (16, 32), (32, 64)]
    assert batch_tier(2_854) == batch_tier(2_854, 3) == (16, 32)
    # ... a fractional-epoch trial is, in optimizer steps, a smaller dataset: 428 examples trained
    assert batch_tier(2_854, 0.15) == (8, 16)
    assert batch_tier(50_000, 0.1) == (16, 32)  # 5,000 examples trained
    # More passes than the seeds' never raise the batch above the dataset's own tier.
    assert batch_tier(500, 20) == (8, 16)


def test_a_fractional_epoch_study_searches_smaller_batches(tiny):
    from search.spec import StudySpec
    from search.study import space_of

    def space(epochs):
        return space_of(StudySpec(model=str(tiny[0]), dataset=str(tiny[1]), method="qlora", n_examples=2854,
                                  n_params=10**9, epochs=epochs))["batch_size"]

    assert (space(0.15).centre, space(0.15).choices) == (8, (4, 8, 16, 32))
    assert (space(3).centre, space(3).choices) == (16, (8, 16, 32, 64))


def test_every_method_has_its_priors_and_its_params_are_searched():
    from spaces.methods import METHODS

    for table in (priors.LEARNING_RATE, priors.REFERENCE_BATCH, priors.STARTING_CONFIGS):
        assert set(table) == set(METHODS)
    for name, m in METHODS.items():
        space = prior_space(name, 7e9, 5_000)
        assert {p.name for p in m.params} <= set(space) and space["max_grad_norm"] == m.max_grad_norm
        assert set(priors.STARTING_CONFIGS[name][0]) == set(space)
        assert all(other in METHODS for other in m.alternatives)
