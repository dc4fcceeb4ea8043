"""One place that turns a storage URL into an Optuna storage."""

from storage.errors import StorageError
from storage.artifacts import open_artifacts
from storage.claim_lock import claim_lock
from storage.open import open_storage
from storage.urls import behind_coordinator, redact, resolve_url

__all__ = ["StorageError", "behind_coordinator", "claim_lock", "open_artifacts", "open_storage", "redact", "resolve_url"]
