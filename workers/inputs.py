"""A study's inputs checked before anything is stored: the model and dataset are read and
counted, every option is in range, and the model's config and tokenizer really load."""

from __future__ import annotations

from pathlib import Path

from search.spec import StudySpec
from spaces.errors import InputError


def spec_from_inputs(model: str, dataset: str, method: str, **options) -> StudySpec:
    """A validated spec: the model loads, every dataset line parses, every option
    is in range. Model and dataset sizes are counted unless options give them."""
    from spaces.dataset import read_dataset
    from spaces.hub import resolve
    from spaces.model import dimensions, parameter_count, read_model_config

    path = resolve(model, options.get("revision"))
    config = read_model_config(path)  # its errors (no config, no tokenizer) are the user's to see
    try:
        hidden_size = dimensions(config)["hidden"]
    except InputError:  # an unusual config: no width correction
        hidden_size = 0
    n_params = options.pop("n_params", None) or parameter_count(path)[0]
    fmt, records = read_dataset(dataset, options.get("dataset_split"), options.get("columns"))
    if options.get("eval_dataset"):
        options.update(eval_source(dataset, options["eval_dataset"], options.get("eval_split")))
        read_dataset(options["eval_dataset"], options["eval_split"], options.get("columns"))
    n_examples = options.pop("n_examples", None) or len(records)
    spec = StudySpec(model=model, dataset=dataset, method=method, n_examples=n_examples, n_params=n_params,
                     hidden_size=hidden_size, **options)
    check_model_loads(str(path), spec.trust_remote_code, records[0] if fmt == "messages" else None,
                      spec.chat_template, spec.seq_len, spec.train_on)
    return spec


def eval_source(dataset: str, eval_dataset: str, eval_split: str | None) -> dict:
    """--eval-dataset names a split of the dataset (when no file of that name exists), or a
    source of its own."""
    from spaces.dataset import splits

    if not Path(eval_dataset).exists() and eval_split is None and eval_dataset in splits(dataset):
        return {"eval_dataset": dataset, "eval_split": eval_dataset}
    local = Path(eval_dataset).exists()
    return {"eval_dataset": str(Path(eval_dataset).absolute()) if local else eval_dataset, "eval_split": eval_split}


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
    from workers.data import IGNORE, encode

    if all(label == IGNORE for label in encode(chat_example, "messages", tokenizer, seq_len, train_on)["labels"]):
        raise InputError(f"dataset: the first conversation has no {train_on} token within the first {seq_len} "
                         "(raise --seq-len)")
