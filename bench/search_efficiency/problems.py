"""The benchmark's problems: a tiny pretrained causal LM, a dataset and a method each.

Both are built offline from the docstrings of Python's standard library and
cached under bench/search_efficiency/.cache/ (rebuilt when the recipe changes):

- docstrings-lora: workers.tiny.build_assets' Llama (hidden 64, 2 layers,
  pretrained 300 steps on module/class docstrings) fine-tuned with LoRA on
  function signature -> first docstring paragraph (prompt/completion).
- moduledocs-full: a GPT-2 (hidden 96, 3 layers, 4 heads), its own tokenizer,
  pretrained on 60% of the module/class docstrings and the function docstrings,
  fully fine-tuned on plain-text 120-240-character chunks of the other 40% of the
  module/class docstrings, which neither pretraining nor the tokenizer saw.
- stdlib-chat-qlora: a Qwen2 (hidden 64, 2 layers), QLoRA on chat messages.
- methods-csv-prefix: a GPT-NeoX (hidden 64, 2 layers, 4 heads), its own tokenizer,
  pretrained on module/class docstrings, prefix-tuned on a CSV file of its own
  columns (`method`: a stdlib class method's signature, `summary`: its docstring's
  first paragraph), read through the study's `columns` mapping: a model family,
  a method and a data format none of the other problems share.

Each problem also has a "truth" learning rate: the best of a log-spaced sweep
(every other hyperparameter at the seeds' starting config, one trial of the
benchmark's trial length per point). Variant (a') centres the prior 30x above it.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.search_efficiency import corpus

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
MODULEDOCS_VERSION = 3


@dataclass(frozen=True)
class Problem:
    name: str
    method: str
    model_dir: str
    dataset: str
    n_examples: int
    n_params: int
    description: str
    hidden_size: int = 0
    """The model's width, as `tunefleet study create` reads it from the config (set by build)."""
    corpus: str = ""
    """The digest of the pinned text it was built from (bench/search_efficiency/corpus.py)."""
    columns: dict = field(default_factory=dict)
    """The dataset's columns for tunefleet's fields (`--columns`), where they differ."""


PROBLEMS = ("docstrings-lora", "moduledocs-full", "stdlib-chat-qlora", "methods-csv-prefix")
# The real benchmark's default set (its recorded results are of these); the replay records them all.
REAL = PROBLEMS[:3]
# Passes over the training split in a trial that runs in full: about 700 examples each, so that
# a search of the full preset fits the 2-core machine's time (the chat data has 2.9k examples).
EPOCHS_CSV = 0.6  # of 1,209 examples: about 700 a full trial, as the others
EPOCHS = {"docstrings-lora": 1.0, "moduledocs-full": 1.0, "stdlib-chat-qlora": 0.15, "methods-csv-prefix": EPOCHS_CSV}


def build(name: str, cache: Path = CACHE) -> Problem:
    """The problem's model and dataset, built once under cache."""
    if name == "docstrings-lora":
        from workers.tiny import build_assets

        text = corpus.load()
        model_dir, dataset = build_assets(cache / name, pretrain_steps=300, texts=(text["prose"], text["pairs"]),
                                          texts_id=corpus.digest())
        return Problem(name, "lora", str(model_dir), str(dataset), _count_lines(dataset), _n_params(model_dir),
                       "Llama hidden 64, 2 layers, 4 heads; LoRA; prompt/completion "
                       "(function signature -> first docstring paragraph)", _hidden_size(model_dir), corpus.digest())
    if name == "moduledocs-full":
        model_dir, dataset = _build_moduledocs(cache / name)
        return Problem(name, "full", str(model_dir), str(dataset), _count_lines(dataset), _n_params(model_dir),
                       "GPT-2 hidden 96, 3 layers, 4 heads; full fine-tuning; plain text "
                       "(120-240-char chunks of held-apart module/class docstrings)", _hidden_size(model_dir), corpus.digest())
    if name == "stdlib-chat-qlora":
        model_dir, dataset = _build_chat(cache / name)
        return Problem(name, "qlora", str(model_dir), str(dataset), _count_lines(dataset), _n_params(model_dir),
                       "Qwen2 hidden 64, 2 layers, 4 heads (2 kv); QLoRA (4-bit NF4); chat messages "
                       "(user asks what a stdlib function, class or method does; assistant answers with its "
                       "docstring's first paragraph)", _hidden_size(model_dir), corpus.digest())
    if name == "methods-csv-prefix":
        model_dir, dataset = _build_methods_csv(cache / name)
        return Problem(name, "prefix", str(model_dir), str(dataset), _count_rows(dataset), _n_params(model_dir),
                       "GPT-NeoX hidden 64, 2 layers, 4 heads; prefix tuning; CSV with columns method, summary "
                       "(a stdlib class method's signature -> its docstring's first paragraph), mapped onto "
                       "prompt/completion", _hidden_size(model_dir), corpus.digest(), dict(CSV_COLUMNS))
    raise ValueError(f"unknown problem '{name}' (choose from {', '.join(PROBLEMS)})")


def _hidden_size(model_dir) -> int:
    from spaces.model import dimensions, read_model_config  # as `tunefleet study create` reads it

    return dimensions(read_model_config(model_dir))["hidden"]


def _n_params(model_dir) -> int:
    from spaces.model import parameter_count  # as `tunefleet study create` counts them

    return parameter_count(model_dir)[0]


def _count_rows(path) -> int:
    import csv

    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def _count_lines(path) -> int:
    with open(path) as f:
        return sum(1 for line in f if line.strip())


# ---- moduledocs-full ------------------------------------------------------------------------

HELD_APART_SHARE = 0.4
CHUNK_CHARS = (120, 240)  # a chunk closes at a paragraph boundary once it has 120 chars; never above 240
# With this small vocabulary a token is ~2.4 characters: 50-100 tokens (median 76), about the benchmark's seq_len.


def split_prose(prose: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """(documents for pretraining, documents held apart for fine-tuning), by a seeded shuffle."""
    docs = list(prose)
    random.Random(seed).shuffle(docs)
    total, held, size = sum(map(len, docs)), [], 0
    while docs and size < HELD_APART_SHARE * total:
        held.append(docs.pop())
        size += len(held[-1])
    return docs, held


def chunk(docs: list[str], low: int = CHUNK_CHARS[0], high: int = CHUNK_CHARS[1]) -> list[str]:
    """Paragraphs packed into pieces of about low..high characters."""
    pieces: list[str] = []
    current = ""
    for doc in docs:
        for para in (p.strip() for p in doc.split("\n\n")):
            while len(para) > high:  # a long paragraph: cut at the last space before the limit
                cut = para.rfind(" ", low, high)
                cut = cut if cut > 0 else high
                if current:
                    pieces.append(current)
                    current = ""
                pieces.append(para[:cut].strip())
                para = para[cut:].strip()
            if not para:
                continue
            current = f"{current}\n\n{para}" if current else para
            if len(current) >= low:
                pieces.append(current[:high])
                current = ""
    if current:
        pieces.append(current)
    return [p for p in pieces if len(p) >= 40]


def _build_moduledocs(root: Path, pretrain_steps: int = 300, hidden: int = 96, layers: int = 3,
                      heads: int = 4, vocab_size: int = 1024) -> tuple[Path, Path]:
    model_dir, dataset = root / "model", root / "moduledocs.jsonl"
    stamp = root / "built.json"
    wanted = {"version": MODULEDOCS_VERSION, "pretrain_steps": pretrain_steps, "hidden": hidden,
              "layers": layers, "heads": heads, "vocab_size": vocab_size, "held_apart": HELD_APART_SHARE,
              "corpus": corpus.digest(),
              "chunk_chars": list(CHUNK_CHARS)}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return model_dir, dataset
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    from workers.tiny import pretrain, save_assets, train_tokenizer

    logging.disable_progress_bar()
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    prose, pairs = corpus.load()["prose"], corpus.load()["pairs"]
    seen, held = split_prose(prose)
    pretrain_texts = seen + [p["prompt"] + p["completion"] for p in pairs]
    tokenizer = train_tokenizer(pretrain_texts, vocab_size)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=heads,
                        n_positions=512, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    pretrain(model, tokenizer, pretrain_texts, pretrain_steps)
    return save_assets(model, tokenizer, [{"text": p} for p in chunk(held)], model_dir, dataset, stamp, wanted)


# ---- the "truth": a learning-rate sweep ---------------------------------------------------

SWEEP_LRS = [float(f"{10 ** (x / 2):.3g}") for x in range(-12, -1)]  # 1e-6 .. 1e-1, half a decade apart


def _truth_path(problem: Problem, trial_config: dict, cache: Path) -> Path:
    tag = "-".join(f"{k}{v}" for k, v in sorted(trial_config.items()))
    return cache / problem.name / f"truth-{tag}.json"


def load_truth(problem: Problem, trial_config: dict, cache: Path = CACHE) -> dict | None:
    """The cached sweep for this problem and trial config, if one was run."""
    path = _truth_path(problem, trial_config, cache)
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] == {"problem": asdict(problem), "trial_config": trial_config, "lrs": SWEEP_LRS}:
            return stored
    return None


def save_truth(problem: Problem, trial_config: dict, losses: list[float], cache: Path = CACHE) -> dict:
    """The truth: the sweep's learning rate with the lowest final eval loss (every other
    hyperparameter at the seeds' starting config, one full-length trial per point)."""
    points = [{"learning_rate": lr, "final_eval_loss": loss} for lr, loss in zip(SWEEP_LRS, losses)]
    finite = [p for p in points if p["final_eval_loss"] == p["final_eval_loss"]]
    best = min(finite, key=lambda p: p["final_eval_loss"])
    result = {"key": {"problem": asdict(problem), "trial_config": trial_config, "lrs": SWEEP_LRS},
              "truth_lr": best["learning_rate"], "truth_loss": best["final_eval_loss"], "sweep": points}
    path = _truth_path(problem, trial_config, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return result


# ---- stdlib-chat-qlora ----------------------------------------------------------------------

CHAT_VERSION = 1
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _build_chat(root: Path, pretrain_steps: int = 300, hidden: int = 64, layers: int = 2,
                vocab_size: int = 1024) -> tuple[Path, Path]:
    model_dir, dataset = root / "model", root / "chat.jsonl"
    stamp = root / "built.json"
    wanted = {"version": CHAT_VERSION, "pretrain_steps": pretrain_steps, "hidden": hidden, "layers": layers,
              "vocab_size": vocab_size, "corpus": corpus.digest()}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return model_dir, dataset
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging

    from workers.tiny import pretrain, save_assets, train_tokenizer

    logging.disable_progress_bar()
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    prose, chats = corpus.load()["prose"], corpus.load()["chats"]
    tokenizer = train_tokenizer(prose + [m["content"] for c in chats for m in c["messages"]], vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 3,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForCausalLM(config)
    pretrain(model, tokenizer, prose, pretrain_steps)  # prose only: the chat format is what fine-tuning teaches
    return save_assets(model, tokenizer, chats, model_dir, dataset, stamp, wanted)


# ---- methods-csv-prefix --------------------------------------------------------------------

CSV_VERSION = 1
CSV_COLUMNS = {"prompt": "method", "completion": "summary"}


def _build_methods_csv(root: Path, pretrain_steps: int = 300, hidden: int = 64, layers: int = 2,
                       heads: int = 4, vocab_size: int = 1024) -> tuple[Path, Path]:
    import csv

    model_dir, dataset = root / "model", root / "methods.csv"
    stamp = root / "built.json"
    wanted = {"version": CSV_VERSION, "pretrain_steps": pretrain_steps, "hidden": hidden, "layers": layers,
              "heads": heads, "vocab_size": vocab_size, "corpus": corpus.digest()}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return model_dir, dataset
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from transformers.utils import logging

    from workers.tiny import pretrain, train_tokenizer

    logging.disable_progress_bar()
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    prose, rows = corpus.load()["prose"], [dict(r) for r in corpus.load()["methods"]]
    tokenizer = train_tokenizer(prose + [r["method"] + " " + r["summary"] for r in rows], vocab_size)
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=heads, intermediate_size=hidden * 4, max_position_embeddings=512,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    model = GPTNeoXForCausalLM(config)
    pretrain(model, tokenizer, prose, pretrain_steps)  # prose only: the signature -> summary task is fine-tuning's
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    random.Random(0).shuffle(rows)
    with dataset.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["method", "summary"])
        writer.writeheader()
        writer.writerows(rows)
    stamp.write_text(json.dumps(wanted))
    return model_dir, dataset
