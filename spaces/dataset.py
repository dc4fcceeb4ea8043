"""Reading a fine-tuning dataset into checked examples: `text`, `prompt`+`completion` or
chat `messages` per example.

Sources: JSONL (read here, line by line: its errors name the line, and the common
case stays free of heavy imports), and through the `datasets` library JSON, CSV
and Parquet files, a directory written by `save_to_disk`, a directory of data
files, or a hub dataset id in the local Hugging Face cache. `columns` maps the
canonical field names to a dataset's own (e.g. {"text": "content"}).
"""

from __future__ import annotations

import json
from pathlib import Path

from spaces.errors import InputError

FORMATS = {
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
}
FIELDS = ("text", "prompt", "completion", "messages")
BUILDERS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


def _format_of(record: dict, where: str, found) -> str:
    for name, keys in FORMATS.items():
        if all(k in record for k in keys):
            return name
    raise InputError(f"{where}: expected a 'text', 'prompt'+'completion' or 'messages' field "
                     f"(found {', '.join(map(repr, found)) or 'none'}; map yours with --text-field etc.)")


def _check(record: dict, fmt: str, where: str) -> None:
    if fmt == "messages":
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise InputError(f"{where}: 'messages' must be a non-empty list")
        for m in messages:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), str)):
                raise InputError(f"{where}: each message needs a string 'role' and 'content'")
        return
    for key in FORMATS[fmt]:
        if not isinstance(record[key], str):
            raise InputError(f"{where}: '{key}' must be a string")
    if not "".join(record[k] for k in FORMATS[fmt]).strip():
        raise InputError(f"{where}: the example is empty")


def _jsonl_rows(path: Path):
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"dataset {path}, line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise InputError(f"{where}: expected a JSON object")
            yield where, record


def _load(source: str):
    """The `datasets` Dataset or DatasetDict behind a source that is not JSONL."""
    import datasets

    datasets.disable_progress_bars()  # the CLI speaks in one-line messages
    datasets.logging.set_verbosity_error()
    path = Path(source)
    if path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json")):
        return datasets.load_from_disk(str(path))
    if path.is_file():
        if path.suffix not in BUILDERS:
            raise InputError(f"dataset {source}: unknown file type '{path.suffix}' "
                             f"(use {', '.join(BUILDERS)}, or a save_to_disk directory)")
        return datasets.load_dataset(BUILDERS[path.suffix], data_files=str(path))
    if path.is_dir():
        return datasets.load_dataset(str(path))
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise InputError(f"dataset {source}: no such file or directory")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(source, repo_type="dataset", local_files_only=True)
    except LocalEntryNotFoundError:
        raise InputError(f"dataset {source}: not a file or directory and not in the Hugging Face cache "
                         f"{constants.HF_HUB_CACHE} (download it with: hf download {source} "
                         "--repo-type dataset)") from None
    return datasets.load_dataset(snapshot)


def splits(source: str) -> list[str]:
    """The splits a source holds (a JSONL file: just train)."""
    if Path(source).suffix == ".jsonl" and Path(source).is_file():
        return ["train"]
    loaded = _catching(source, _load)
    return list(loaded) if hasattr(loaded, "keys") else ["train"]


def _catching(source: str, fn):
    try:
        return fn(source)
    except InputError:
        raise
    except Exception as e:  # datasets' and pyarrow's own errors: their first line says what is wrong
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"dataset {source}: cannot be read ({reason})") from None


def _library_rows(source: str, split: str | None):
    loaded = _catching(source, _load)
    if hasattr(loaded, "keys"):  # a DatasetDict: the split asked for, else train, else its only one
        names = list(loaded)
        name = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if name not in names:
            raise InputError(f"dataset {source}: " + (f"no split '{split}'" if split else "several splits")
                             + f" (it has {', '.join(names)}; choose with --dataset-split)")
        loaded = loaded[name]
    elif split not in (None, "train"):
        raise InputError(f"dataset {source}: no split '{split}' (it has one split: train)")
    for i, record in enumerate(loaded.to_list(), 1):
        yield f"dataset {source}, row {i}", record


def read_dataset(source: str | Path, split: str | None = None,
                 columns: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    """All examples of a dataset and their format; every example is checked."""
    source = str(source)
    path = Path(source)
    if path.suffix == ".jsonl" and path.is_file():
        if split not in (None, "train"):
            raise InputError(f"dataset {source}: no split '{split}' (a JSONL file has one split: train)")
        rows = _jsonl_rows(path)
    elif path.suffix == ".jsonl":
        raise InputError(f"dataset {source}: no such file")
    else:
        rows = _library_rows(source, split)
    rename = {column: field for field, column in (columns or {}).items() if column != field}
    fmt, records = None, []
    for where, record in rows:
        missing = [c for c in rename if c not in record]
        if missing:
            raise InputError(f"{where}: no column '{missing[0]}' (it has {', '.join(map(repr, record))})")
        found, record = list(record), {rename.get(k, k): v for k, v in record.items() if rename.get(k, k) in FIELDS}
        record_fmt = _format_of(record, where, found)
        if fmt is None:
            fmt = record_fmt
        elif record_fmt != fmt:
            raise InputError(f"{where}: format '{record_fmt}' differs from the first example's '{fmt}'")
        _check(record, fmt, where)
        records.append(record)
    if not records:
        raise InputError(f"dataset {source}: no examples")
    return fmt, records
