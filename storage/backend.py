"""A storage URL resolved once (as optuna.storages.get_storage resolves its own): what kind
of store it is, and everything that follows from the kind.

| kind        | URL                           | storage                 | artifacts              | claim lock          |
|-------------|-------------------------------|-------------------------|------------------------|---------------------|
| journal     | journal:PATH, or a plain PATH | Optuna's journal file   | PATH's dir/artifacts   | flock beside it     |
| postgresql  | postgresql://...              | RDBStorage (psycopg2)   | a table in the database| pg advisory lock    |
| coordinator | grpc://HOST:PORT              | the coordinator's proxy | its artifact service   | none: it queues     |
| database    | any other SQLAlchemy URL      | RDBStorage              | a directory, if given  | none: SQLite serialises writes; a rare over-claim is tolerated |
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from storage.urls import grpc_address, journal_path, redact, resolve_url

Kind = Literal["journal", "postgresql", "coordinator", "database"]


@dataclass(frozen=True)
class Backend:
    url: str
    """Normalised: psycopg2 for PostgreSQL, a journal's path absolute (workers start elsewhere)."""
    kind: Kind
    journal: Path | None = None
    address: tuple[str, int] | None = None
    """(host, port) of a coordinator."""

    @property
    def behind_coordinator(self) -> bool:
        """Workers here take the trials the coordinator queues (search/ready.py) and create none."""
        return self.kind == "coordinator"

    @property
    def shown(self) -> str:
        """The URL with any password replaced by ***."""
        return redact(self.url)

    def open(self, connections: int = 3):
        """The Optuna storage; a database storage holds at most `connections` connections."""
        from storage import connect

        if self.kind == "journal":
            return connect.journal_storage(self.journal)
        if self.kind == "coordinator":
            return connect.proxy_storage(*self.address)
        return connect.rdb_storage(self.url, connections)

    def artifacts(self, storage, directory: str | None = None, transfers: int = 1):
        """The Optuna ArtifactStore beside `storage` (storage/artifacts.py); `directory` wins.
        In PostgreSQL it has `transfers` connections of its own (and one for removals): an
        upload holds its connection throughout, and the storage's calls must not wait for it."""
        from storage import artifacts

        if directory:
            return artifacts.directory_store(Path(directory).expanduser().absolute())
        if self.kind == "journal":
            return artifacts.directory_store(self.journal.parent / "artifacts")
        if self.kind == "coordinator":
            from storage.grpc_artifacts import GrpcArtifactStore

            return GrpcArtifactStore(*self.address)
        if self.kind == "postgresql":
            from storage import connect
            from storage.pg_artifacts import PostgresArtifactStore

            return PostgresArtifactStore(connect.engine(self.url, transfers + 1))
        raise ValueError("this storage has no artifact store of its own; pass a directory")

    @contextlib.contextmanager
    def claim_lock(self, storage, study_name: str):
        """A study-wide lock held while a worker checks the budget and claims a trial, so that
        N workers never claim more than the study's n_trials between them (storage/claim_lock.py)."""
        from storage import claim_lock

        key = zlib.crc32(study_name.encode())
        if self.kind == "postgresql":
            from storage.optuna_compat import rdb_of

            with claim_lock.advisory_lock(rdb_of(storage).engine, key):
                yield
        elif self.kind == "journal":
            with claim_lock.file_lock(Path(f"{self.journal}.claim-{key}.lock")):
                yield
        elif self.kind == "coordinator":
            raise RuntimeError("no claim lock behind the coordinator: take the trials it queues (search/ready.py)")
        else:  # SQLite and others serialise writes themselves; a rare over-claim is tolerated
            yield


def backend(url: str | None = None) -> Backend:
    """The --storage value, else $TUNEFLEET_STORAGE, else the embedded journal, resolved."""
    url = resolve_url(url)
    journal = journal_path(url)
    if journal is not None:
        return Backend(f"journal:{journal}", "journal", journal=journal)
    address = grpc_address(url)
    if address is not None:
        return Backend(url, "coordinator", address=address)
    return Backend(url, "postgresql" if url.startswith("postgresql") else "database")


def open_storage(url: str | None = None, connections: int = 3):
    """The Optuna storage at `url` (see Backend.open)."""
    return backend(url).open(connections)
