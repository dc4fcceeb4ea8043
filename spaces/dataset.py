"""Reading a fine-tuning dataset: JSONL with `text`, `prompt`+`completion` or chat `messages`."""

from __future__ import annotations

import json
from pathlib import Path

from spaces.errors import InputError

FORMATS = {
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
}


def _format_of(record: dict, where: str) -> str:
    for name, keys in FORMATS.items():
        if all(k in record for k in keys):
            return name
    raise InputError(f"{where}: expected a 'text', 'prompt'+'completion' or 'messages' field")


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


def read_dataset(path: str | Path) -> tuple[str, list[dict]]:
    """All examples of a JSONL file and their format; every line is checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dataset {path}: no such file")
    fmt, records = None, []
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
            line_fmt = _format_of(record, where)
            if fmt is None:
                fmt = line_fmt
            elif line_fmt != fmt:
                raise InputError(f"{where}: format '{line_fmt}' differs from the first line's '{fmt}'")
            _check(record, fmt, where)
            records.append(record)
    if not records:
        raise InputError(f"dataset {path}: no examples")
    return fmt, records
