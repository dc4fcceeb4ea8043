"""The two claim locks (which one a study takes is storage/backend.py's to say)."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path


@contextlib.contextmanager
def advisory_lock(engine, key: int):
    """PostgreSQL's transaction-scoped advisory lock: released with the transaction, so also
    when the worker's connection dies."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        yield


@contextlib.contextmanager
def file_lock(path: Path):
    """An flock on a file beside the journal: released when the holder's process dies."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
