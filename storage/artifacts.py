"""The artifact store beside a storage: trial checkpoints and curve plots.

Embedded journal: a directory next to the journal file. PostgreSQL: a table in
the same database (storage/pg_artifacts.py), so a worker on any machine that
reaches the database reaches the checkpoints too, with nothing else to mount. A
coordinator's address (grpc://): its artifact service (storage/grpc_artifacts.py),
in front of its own store. A directory given explicitly (a shared filesystem, say,
for full fine-tuning checkpoints of many GB) overrides them. Which one a storage
gets is storage/backend.py's to say.
"""

from __future__ import annotations

from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore


def directory_store(path: Path) -> FileSystemArtifactStore:
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)
