"""Opening each kind of Optuna storage (storage/backend.py picks which), with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

from storage.errors import StorageError
from storage.urls import redact, scrub

CONNECT_TIMEOUT_S = 5


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def rdb_storage(url: str, connections: int) -> optuna.storages.BaseStorage:
    """A database storage holding at most `connections` connections."""
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url, connections))
    except Exception as e:  # SQLAlchemy, the driver, or Optuna's schema check
        raise StorageError(f"cannot open storage {redact(url)}: {_reason(e, url)}") from None


def engine(url: str, connections: int):
    """A SQLAlchemy engine of its own, holding at most `connections` connections (the artifacts')."""
    import sqlalchemy

    return sqlalchemy.create_engine(url, **_engine_kwargs(url, connections))


def _engine_kwargs(url: str, connections: int) -> dict:
    # A worker needs at most three connections at once (the claim lock's transaction, the
    # claim itself, the lease heartbeat); SQLAlchemy's default pool would allow fifteen.
    # pool_pre_ping: a connection idle through an hours-long trial is checked before use.
    kwargs = {"pool_pre_ping": True}
    if not url.startswith("sqlite"):
        kwargs.update(pool_size=connections - 1, max_overflow=1)
    if url.startswith("postgresql"):
        # A link that dies mid-call would otherwise hang the call for the kernel's ~15 min of
        # retransmissions: keepalives notice a silent server, tcp_user_timeout unacked data.
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S, "keepalives": 1,
                                  "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
                                  "tcp_user_timeout": 60_000}
    return kwargs


def proxy_storage(host: str, port: int) -> optuna.storages.BaseStorage:
    """A coordinator's storage proxy (storage/proxy.py): many workers, few database connections."""
    import warnings

    import grpc
    from optuna.exceptions import ExperimentalWarning

    from storage.grpc_client import StorageProxy

    with warnings.catch_warnings():  # experimental since Optuna 4.2; pinned by our tests
        warnings.simplefilter("ignore", ExperimentalWarning)
        proxy = StorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=CONNECT_TIMEOUT_S)
    except (grpc.FutureTimeoutError, ConnectionError):
        raise StorageError(f"cannot reach the coordinator at grpc://{host}:{port} "
                           f"(no answer in {CONNECT_TIMEOUT_S} s; is `tunefleet coordinator --serve` running?)") from None
    return proxy


def _reason(error: Exception, url: str) -> str:
    cause = getattr(error, "orig", None) or error
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    # psycopg2 puts the useful part ("password authentication failed ...") last.
    reason = next((ln for ln in reversed(lines) if "FATAL" in ln), lines[-1] if lines else type(cause).__name__)
    return scrub(reason, url)
