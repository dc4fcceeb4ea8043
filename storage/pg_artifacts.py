"""An Optuna ArtifactStore in PostgreSQL: artifacts as rows of 8 MiB chunks.

Chunks keep a multi-GB checkpoint under bytea's 1 GB limit and let a reader
stream it with one chunk in memory. A write is one transaction, so a worker
killed mid-upload leaves no partial artifact behind.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy import text

from storage.chunks import ChunkReader

CHUNK = 8 * 2 ** 20
TABLE = "tunefleet_artifact_chunks"
_CREATE_LOCK = 0x7475_6E65  # serialises CREATE TABLE IF NOT EXISTS, which races in PostgreSQL


class PostgresArtifactStore:
    def __init__(self, engine):
        self.engine = engine
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK})
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {TABLE} (artifact_id TEXT NOT NULL, "
                              "chunk INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (artifact_id, chunk))"))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(f"DELETE FROM {TABLE} WHERE artifact_id = :a"), {"a": artifact_id})
            data, chunk = content_body.read(CHUNK), 0
            while True:  # an empty artifact is one empty chunk: it exists
                conn.execute(text(f"INSERT INTO {TABLE} VALUES (:a, :c, :d)"),
                             {"a": artifact_id, "c": chunk, "d": data})
                data, chunk = content_body.read(CHUNK), chunk + 1
                if not data:
                    break

    def open_reader(self, artifact_id: str) -> BinaryIO:
        with self.engine.connect() as conn:
            n = conn.execute(text(f"SELECT count(*) FROM {TABLE} WHERE artifact_id = :a"),
                             {"a": artifact_id}).scalar_one()
        if n == 0:
            raise ArtifactNotFound(f"artifact {artifact_id} not found")
        return io.BufferedReader(ChunkReader(_chunks(self.engine, artifact_id, n)), buffer_size=CHUNK)

    def remove(self, artifact_id: str) -> None:
        with self.engine.begin() as conn:
            gone = conn.execute(text(f"DELETE FROM {TABLE} WHERE artifact_id = :a"), {"a": artifact_id}).rowcount
        if gone == 0:
            raise ArtifactNotFound(f"artifact {artifact_id} not found")


def _chunks(engine, artifact_id: str, n_chunks: int):
    """An artifact's chunks in order, one query per chunk."""
    for chunk in range(n_chunks):
        with engine.connect() as conn:
            yield bytes(conn.execute(text(f"SELECT data FROM {TABLE} WHERE artifact_id = :a AND chunk = :c"),
                                     {"a": artifact_id, "c": chunk}).scalar_one())
