"""Opening an Optuna storage from a URL, with errors a user can act on."""

from __future__ import annotations

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

from storage.errors import StorageError
from storage.urls import journal_path, redact, resolve_url, scrub

CONNECT_TIMEOUT_S = 5


def open_storage(url: str | None = None) -> optuna.storages.BaseStorage:
    url = resolve_url(url)
    path = journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    # A worker needs at most three connections at once (the claim lock's transaction, the
    # claim itself, the lease heartbeat); SQLAlchemy's default pool would allow fifteen.
    # pool_pre_ping: a connection idle through an hours-long trial is checked before use.
    engine_kwargs = {"pool_pre_ping": True}
    if not url.startswith("sqlite"):
        engine_kwargs.update(pool_size=2, max_overflow=1)
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as e:  # SQLAlchemy, the driver, or Optuna's schema check
        raise StorageError(f"cannot open storage {redact(url)}: {_reason(e, url)}") from None


def _reason(error: Exception, url: str) -> str:
    cause = getattr(error, "orig", None) or error
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    # psycopg2 puts the useful part ("password authentication failed ...") last.
    reason = next((ln for ln in reversed(lines) if "FATAL" in ln), lines[-1] if lines else type(cause).__name__)
    return scrub(reason, url)
