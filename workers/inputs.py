"""Checking that a model directory really loads, before a study is stored."""

from __future__ import annotations

from spaces.errors import InputError


def check_model_loads(path: str, trust_remote_code: bool) -> None:
    """Load the config and tokenizer (not the weights) the way a worker will."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"model {path}: cannot load its config or tokenizer ({reason})") from None
