"""Checking that a model directory really loads, before a study is stored."""

from __future__ import annotations

from spaces.errors import InputError


def check_model_loads(path: str, trust_remote_code: bool, chat_example: dict | None = None,
                      chat_template: str | None = None, seq_len: int = 1 << 30, train_on: str = "assistant") -> None:
    """Load the config and tokenizer (not the weights) the way a worker will. With chat data,
    its first example must render with the chat template (the tokenizer's, or the one given:
    none is invented) and its assistant turns be found."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"model {path}: cannot load its config or tokenizer ({reason})") from None
    if chat_example is None:
        return
    tokenizer.chat_template = chat_template or tokenizer.chat_template
    if not tokenizer.chat_template:
        raise InputError(f"model {path}: its tokenizer has no chat template to render the dataset's "
                         "messages with (give one with --chat-template FILE)")
    if not tokenizer.is_fast:
        raise InputError(f"model {path}: chat data needs a fast tokenizer (tokenizer.json) to find the "
                         "assistant turns' tokens")
    from workers.data import encode

    from workers.data import IGNORE

    if all(label == IGNORE for label in encode(chat_example, "messages", tokenizer, seq_len, train_on)["labels"]):
        raise InputError(f"dataset: the first conversation has no {train_on} token within the first {seq_len} "
                         "(raise --seq-len)")
