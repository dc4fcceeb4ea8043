"""A study-wide lock held while a worker checks the budget and claims a trial,
so that N workers never claim more than the study's n_trials between them."""

from __future__ import annotations

import contextlib
import fcntl
import zlib

import optuna

from storage.urls import journal_path, resolve_url


@contextlib.contextmanager
def claim_lock(storage: optuna.storages.BaseStorage, url: str | None, study_name: str):
    key = zlib.crc32(study_name.encode())
    journal = journal_path(resolve_url(url))
    if isinstance(storage, optuna.storages.RDBStorage) and storage.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with storage.engine.begin() as conn:  # the lock ends with this transaction
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield
    elif journal is not None:
        with open(f"{journal}.claim-{key}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    else:  # SQLite and others serialise writes themselves; a rare over-claim is tolerated
        yield
