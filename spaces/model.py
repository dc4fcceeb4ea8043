"""What a model directory holds, read without loading weights or importing transformers."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from spaces.errors import InputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def read_model_config(path: str | Path) -> dict:
    """The model's config.json, after checking that a tokenizer sits beside it."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"model {path}: no such directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError(f"model {path}: no config.json (save the model with save_pretrained)")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"model {path}: config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise InputError(f"model {path}: config.json has no model_type")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"model {path}: no tokenizer files (save the tokenizer with save_pretrained)")
    return config


def _safetensors_counts(path: Path) -> tuple[int, int] | None:
    """(parameters, of which embeddings) from the safetensors headers: exact, no weights read."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    total = embeddings = 0
    for file in files:
        with file.open("rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            n = math.prod(tensor["shape"])
            total += n
            embeddings += n if "embed" in name or "wte" in name or "lm_head" in name else 0
    return total, embeddings


def _config_counts(config: dict) -> tuple[int, int]:
    """(parameters, of which embeddings) of a decoder-only transformer, from its config."""
    dims = dimensions(config)
    h, layers, vocab, inter = dims["hidden"], dims["layers"], dims["vocab"], dims["intermediate"]
    head_dim = dims["head_dim"]  # heads x head_dim need not be the hidden size (Qwen3, Gemma)
    attention = 2 * h * dims["heads"] * head_dim + 2 * h * dims["kv_heads"] * head_dim
    mlp = (3 if config.get("hidden_act", "silu") in ("silu", "swiglu") else 2) * h * inter
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return layers * (attention + mlp + 2 * h) + h + embeddings, embeddings


def dimensions(config: dict) -> dict[str, int]:
    """Hidden size, layers, heads, head width, kv heads, intermediate size and vocabulary,
    under the names the common architectures use."""
    def pick(*keys, default=None):
        for key in keys:
            if isinstance(config.get(key), int):
                return config[key]
        if default is None:
            raise InputError(f"model config has none of {', '.join(keys)}")
        return default

    hidden = pick("hidden_size", "n_embd", "d_model")
    heads = pick("num_attention_heads", "n_head", "num_heads")
    return {
        "hidden": hidden, "heads": heads, "head_dim": pick("head_dim", default=hidden // heads),
        "layers": pick("num_hidden_layers", "n_layer", "num_layers"),
        "kv_heads": pick("num_key_value_heads", default=heads),
        "intermediate": pick("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
        "vocab": pick("vocab_size"),
    }


def parameter_count(path: str | Path) -> tuple[int, int]:
    """(parameters, of which embeddings): exact from safetensors headers, else
    estimated from config.json; weights are never loaded."""
    path = Path(path)
    return _safetensors_counts(path) or _config_counts(read_model_config(path))
