"""Examples to token ids, the train/eval split and the padding collator."""

from __future__ import annotations

import random

import torch

from search.spec import StudySpec
from spaces.dataset import read_dataset
from spaces.errors import InputError

IGNORE = -100  # label of tokens that carry no loss (prompt and padding)


def _assistant_spans(messages: list[dict], tokenizer, text: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in the rendered conversation: from the end of
    the conversation before the turn (with the generation prompt) to the end of the turn."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        end = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (text.startswith(start) and text.startswith(end) and len(start) <= len(end)):
            raise InputError("the chat template does not render a conversation as the continuation of its "
                             "earlier turns, so its assistant turns cannot be found (use --train-on all)")
        spans.append((len(start), len(end)))
    return spans


def _chat(record: dict, tokenizer, seq_len: int, train_on: str) -> dict:
    """The rendered conversation's ids, the loss on the assistant turns (or on all of it). The
    template places any BOS and end-of-turn tokens itself."""
    text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    spans = [(0, len(text))] if train_on == "all" else _assistant_spans(record["messages"], tokenizer, text)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [i if any(a <= s < b for a, b in spans) else IGNORE for i, (s, _) in zip(ids, enc["offset_mapping"])]
    return {"input_ids": ids[:seq_len], "labels": labels[:seq_len]}


def encode(record: dict, fmt: str, tokenizer, seq_len: int, train_on: str = "assistant") -> dict:
    """Token ids and labels of one example: the loss on the text, on the completion (never the
    prompt), or on a conversation's assistant turns (train_on="all": every token)."""
    if fmt == "messages":
        return _chat(record, tokenizer, seq_len, train_on)
    prompt, target = ("", record["text"]) if fmt == "text" else (record["prompt"], record["completion"])
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt_ids + target_ids
    labels = [IGNORE] * len(prompt_ids) + target_ids
    if tokenizer.bos_token_id is not None:
        ids, labels = [tokenizer.bos_token_id] + ids, [IGNORE] + labels
    return {"input_ids": ids[:seq_len], "labels": labels[:seq_len]}


def _examples(spec: StudySpec, tokenizer, source: str, split: str | None) -> list[dict]:
    fmt, records = read_dataset(source, split, spec.columns)
    examples = [encode(r, fmt, tokenizer, spec.seq_len, spec.train_on) for r in records]
    return [e for e in examples if any(label != IGNORE for label in e["labels"])]


def train_eval_split(spec: StudySpec, tokenizer) -> tuple[list[dict], list[dict]]:
    """The same split in every worker: shuffled with the spec's seed; the eval examples are
    the eval dataset's (up to max_eval_examples) or a held-out share."""
    examples = _examples(spec, tokenizer, spec.dataset, spec.dataset_split)
    random.Random(spec.seed).shuffle(examples)
    if spec.eval_dataset:
        return examples, _examples(spec, tokenizer, spec.eval_dataset, spec.eval_split)[: spec.max_eval_examples]
    n_eval = max(1, min(spec.max_eval_examples, round(len(examples) * spec.eval_fraction)))
    return examples[n_eval:], examples[:n_eval]


class Collator:
    """Pads a batch to its longest example."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in batch)
        def pad(key, value):
            return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in batch])
        ids = pad("input_ids", self.pad_id)
        mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in batch])
        return {"input_ids": ids, "attention_mask": mask, "labels": pad("labels", IGNORE)}
