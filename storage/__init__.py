"""One place that turns a storage URL into an Optuna storage, its artifact store and its
claim lock: storage/backend.py."""

from storage.backend import Backend, backend, open_storage
from storage.errors import StorageError

__all__ = ["Backend", "StorageError", "backend", "open_storage"]
