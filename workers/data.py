"""Examples to token ids, the train/eval split and the padding collator."""

from __future__ import annotations

import random

import torch

from search.spec import StudySpec
from spaces.dataset import read_dataset

IGNORE = -100  # label of tokens that carry no loss (prompt and padding)


def _pieces(record: dict, fmt: str, tokenizer) -> tuple[str, str]:
    """(prompt text that carries no loss, text that does)."""
    if fmt == "text":
        return "", record["text"]
    if fmt == "prompt_completion":
        return record["prompt"], record["completion"]
    if tokenizer.chat_template:
        return "", tokenizer.apply_chat_template(record["messages"], tokenize=False)
    return "", "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in record["messages"])


def encode(record: dict, fmt: str, tokenizer, seq_len: int) -> dict:
    prompt, target = _pieces(record, fmt, tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt_ids + target_ids
    labels = [IGNORE] * len(prompt_ids) + target_ids
    if tokenizer.bos_token_id is not None:
        ids, labels = [tokenizer.bos_token_id] + ids, [IGNORE] + labels
    return {"input_ids": ids[:seq_len], "labels": labels[:seq_len]}


def train_eval_split(spec: StudySpec, tokenizer) -> tuple[list[dict], list[dict]]:
    """The same split in every worker: shuffled with the spec's seed."""
    fmt, records = read_dataset(spec.dataset)
    examples = [encode(r, fmt, tokenizer, spec.seq_len) for r in records]
    examples = [e for e in examples if any(label != IGNORE for label in e["labels"])]
    random.Random(spec.seed).shuffle(examples)
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
