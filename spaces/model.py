"""What a model directory holds, read without loading weights or importing transformers."""

from __future__ import annotations

import json
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
