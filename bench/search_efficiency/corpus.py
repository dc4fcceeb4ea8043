"""The benchmark's text, pinned: the standard library's docstrings as one interpreter saw them,
committed beside this file (corpus.json.gz).

The problems are built from Python's own docstrings, but which modules import and what their
members hold depends on the interpreter's build and on what the process had imported before: on
one machine, 1,030 or 1,031 module and class docstrings and 792 or 793 function ones, by the
virtualenv and the libraries loaded first. A problem rebuilt in another process was another
problem (another tokenizer; moduledocs-full's losses 0.4 lower), so its recorded table no longer
described it. The problems read this file instead; it changes only when written again:

    python -m bench.search_efficiency.corpus     # then every table must be recorded again
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import warnings
from functools import cache
from pathlib import Path

PATH = Path(__file__).resolve().parent / "corpus.json.gz"


def stdlib_questions() -> list[dict]:
    """One chat per documented stdlib function, class and method: the user asks what it does,
    the assistant answers with the first paragraph of its docstring."""
    from workers.tiny import stdlib_members

    chats = []

    def add(qualname: str, obj) -> None:
        doc = inspect.getdoc(obj)
        if doc:
            chats.append({"messages": [{"role": "user", "content": f"What does {qualname} do?"},
                                       {"role": "assistant", "content": doc.split("\n\n")[0]}]})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, _, obj_name, obj in stdlib_members():
            if obj_name is not None and (inspect.isfunction(obj) or inspect.isclass(obj)):
                add(f"{name}.{obj_name}", obj)
            if obj_name is not None and inspect.isclass(obj):
                for method_name, method in sorted(vars(obj).items()):
                    if not method_name.startswith("_") and inspect.isfunction(method):
                        add(f"{name}.{obj_name}.{method_name}", method)
    return chats


def stdlib_methods() -> list[dict]:
    """{method: `module.Class.name(signature)`, summary: its docstring's first paragraph} for every
    documented public method of a stdlib class."""
    from workers.tiny import _signature, stdlib_members

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, _, obj_name, obj in stdlib_members():
            if obj_name is None or not inspect.isclass(obj):
                continue
            for method_name, method in sorted(vars(obj).items()):
                doc = inspect.getdoc(method) if inspect.isfunction(method) else None
                if method_name.startswith("_") or not doc:
                    continue
                try:
                    signature = f"{name}.{obj_name}.{method_name}{_signature(method)}"
                except (TypeError, ValueError):
                    continue
                rows.append({"method": signature, "summary": doc.split("\n\n")[0]})
    return rows


def write(path: Path = PATH) -> str:
    """Reads the texts from this interpreter's standard library and stores them; their digest."""
    from workers.tiny import stdlib_texts

    prose, pairs = stdlib_texts()
    body = json.dumps({"prose": prose, "pairs": pairs, "chats": stdlib_questions(), "methods": stdlib_methods()},
                      sort_keys=True)
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
        f.write(body.encode())
    load.cache_clear()
    return digest(path)


@cache
def load(path: Path = PATH) -> dict:
    """{prose: module and class docstrings, pairs: function {prompt, completion}, chats: {messages},
    methods: class methods' {method, summary}}."""
    with gzip.open(path, "rt") as f:
        return json.load(f)


def digest(path: Path = PATH) -> str:
    """What the problems' recipes name the corpus by."""
    with gzip.open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


if __name__ == "__main__":
    print(f"{PATH}: {write()}")
