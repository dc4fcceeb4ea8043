"""A tiny real causal LM, its tokenizer and a dataset, built offline from the
docstrings of Python's standard library (real English text on every machine).

Used by `tunefleet demo`, the tests and the benchmarks: nothing is downloaded.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import sys
import warnings
from pathlib import Path

BUILD_VERSION = 3  # 3: no environment in the signatures
_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "ensurepip", "venv", "pydoc_data"}


def stdlib_texts() -> tuple[list[str], list[dict]]:
    """(module and class docstrings, function {prompt, completion} pairs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules still have good docstrings
        return _docstrings()


def stdlib_members():
    """(module name, module, member name, member) of every public class and function that the
    standard library's importable modules define themselves; the module itself with name None."""
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIP:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # platform-specific modules
            continue
        for obj_name, obj in sorted(vars(module).items()):
            if not obj_name.startswith("_") and getattr(obj, "__module__", None) == name:
                yield name, module, obj_name, obj
        yield name, module, None, module


def _docstrings() -> tuple[list[str], list[dict]]:
    prose, pairs = [], []
    for name, _, obj_name, obj in stdlib_members():
        doc = inspect.getdoc(obj)
        if not doc:
            continue
        if obj_name is None or inspect.isclass(obj):
            prose.append(doc)
        elif inspect.isfunction(obj):
            try:
                signature = f"{name}.{obj_name}{_signature(obj)}"
            except (TypeError, ValueError):
                continue
            pairs.append({"prompt": f"{signature}\n", "completion": doc.split("\n\n")[0]})
    return prose, pairs


class _Elided:
    def __repr__(self) -> str:
        return "..."


_ELIDED = _Elided()


def _signature(function) -> inspect.Signature:
    """The signature with only literal defaults: others (cgi's `environ=os.environ`) would put
    this process's environment, secrets and all, into the dataset, and make it differ per run."""
    literal = (type(None), bool, int, float, str, bytes)

    def plain(p: inspect.Parameter) -> inspect.Parameter:
        if p.default is p.empty or (isinstance(p.default, literal) and len(repr(p.default)) <= 40):
            return p
        return p.replace(default=_ELIDED)

    signature = inspect.signature(function)
    return signature.replace(parameters=[plain(p) for p in signature.parameters.values()])


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_model(tokenizer, hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3,  # multiples of 64: bitsandbytes 4-bit blocks on CPU
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def pretrain(model, tokenizer, texts: list[str], steps: int, seq_len: int = 128, batch: int = 16) -> None:
    """A short language-modelling run, so that fine-tuning starts from a model
    that knows something, as it would in real use."""
    import torch

    ids = [t for text in texts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    chunks = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x = chunks[torch.randint(len(chunks), (batch,), generator=generator)]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()


def build_assets(root: str | Path, pretrain_steps: int = 300, hidden: int = 64, layers: int = 2,
                 vocab_size: int = 1024, texts: tuple[list, list] | None = None,
                 texts_id: str | None = None) -> tuple[Path, Path]:
    """(model dir, dataset file) under root, built once and reused afterwards; from `texts`
    ((prose, pairs) as stdlib_texts gives them, named texts_id) instead of this process's
    standard library where given (bench/search_efficiency/corpus.py)."""
    import torch
    from transformers.utils import logging

    logging.disable_progress_bar()
    root = Path(root)
    model_dir, dataset = root / "model", root / "docstrings.jsonl"
    stamp = root / "built.json"
    wanted = {"version": BUILD_VERSION, "pretrain_steps": pretrain_steps, "hidden": hidden,
              "layers": layers, "vocab_size": vocab_size, **({"texts": texts_id} if texts_id else {})}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return model_dir, dataset
    torch.manual_seed(0)
    prose, pairs = texts or stdlib_texts()
    tokenizer = train_tokenizer(prose + [p["prompt"] + p["completion"] for p in pairs], vocab_size)
    model = build_model(tokenizer, hidden, layers)
    pretrain(model, tokenizer, prose, pretrain_steps)
    return save_assets(model, tokenizer, pairs, model_dir, dataset, stamp, wanted)


def save_assets(model, tokenizer, records: list[dict], model_dir: Path, dataset: Path, stamp: Path,
                recipe: dict) -> tuple[Path, Path]:
    """Writes model, tokenizer and the shuffled records, then the recipe stamp that marks them built."""
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    random.Random(0).shuffle(records)
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
    stamp.write_text(json.dumps(recipe))
    return model_dir, dataset
