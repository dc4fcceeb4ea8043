"""The artifact store beside a storage: trial checkpoints and curve plots.

Embedded journal: a directory next to the journal file. PostgreSQL: a table in
the same database, so a worker on any machine that reaches the database
reaches the checkpoints too, with nothing else to mount. A coordinator's
address (grpc://): its artifact service, in front of its own store. A directory given
explicitly (a shared filesystem, say, for full fine-tuning checkpoints of
many GB) overrides both.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore

from storage.urls import grpc_address, journal_path, rdb_of, resolve_url


def open_artifacts(storage: optuna.storages.BaseStorage, url: str | None = None, directory: str | None = None):
    """An Optuna ArtifactStore for the storage opened from `url`."""
    if directory:
        return _directory(Path(directory).expanduser().absolute())
    url = resolve_url(url)
    journal = journal_path(url)
    if journal is not None:
        return _directory(journal.parent / "artifacts")
    address = grpc_address(url)
    if address is not None:
        from storage.grpc_artifacts import GrpcArtifactStore

        return GrpcArtifactStore(*address)
    storage = rdb_of(storage)
    if isinstance(storage, optuna.storages.RDBStorage) and storage.engine.dialect.name == "postgresql":
        from storage.pg_artifacts import PostgresArtifactStore

        return PostgresArtifactStore(storage.engine)
    raise ValueError("this storage has no artifact store of its own; pass a directory")


def _directory(path: Path) -> FileSystemArtifactStore:
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)
