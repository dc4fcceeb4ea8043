"""A study-wide lock held while a worker checks the budget and claims a trial,
so that N workers never claim more than the study's n_trials between them.

Behind a coordinator's proxy there is none to take: there workers only take the
trials the coordinator queued (search/ready.py), and asking for the lock is a bug."""

from __future__ import annotations

import contextlib
import fcntl
import zlib

import optuna

from storage.urls import behind_coordinator, journal_path, rdb_of, resolve_url


@contextlib.contextmanager
def claim_lock(storage: optuna.storages.BaseStorage, url: str | None, study_name: str):
    key = zlib.crc32(study_name.encode())
    url = resolve_url(url)
    journal = journal_path(url)
    rdb = rdb_of(storage)
    if isinstance(rdb, optuna.storages.RDBStorage) and rdb.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with rdb.engine.begin() as conn:  # the lock ends with this transaction
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield
    elif journal is not None:
        with open(f"{journal}.claim-{key}.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    elif behind_coordinator(url):
        raise RuntimeError("no claim lock behind the coordinator: take the trials it queues (search/ready.py)")
    else:  # SQLite and others serialise writes themselves; a rare over-claim is tolerated
        yield
