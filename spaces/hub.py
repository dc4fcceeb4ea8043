"""Where a model named by the user lives on this machine: a local directory, or a
hub id resolved from the local Hugging Face cache without the network.

A study stores the name as the user gave it (`org/name` plus a revision), never
a cache path, so a worker on another machine resolves it in its own cache.
"""

from __future__ import annotations

from pathlib import Path

from spaces.errors import InputError


def is_local(name: str) -> bool:
    """A directory that exists wins over a hub id of the same spelling, as in transformers."""
    return Path(name).is_dir()


def resolve(name: str, revision: str | None = None) -> Path:
    """The directory holding the model's files: the directory itself, or the cached snapshot
    of hub id `name` at `revision` (a branch, tag or commit; default main). Honours
    HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE as huggingface_hub reads them."""
    if is_local(name):
        return Path(name)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise InputError(f"model {name}: no such directory")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True))
    except HFValidationError:
        raise InputError(f"model {name}: no such directory, and not a valid hub id") from None
    except LocalEntryNotFoundError:
        at = f" at revision {revision}" if revision else ""
        fetch = f"hf download {name}" + (f" --revision {revision}" if revision else "")
        raise InputError(f"model {name}{at}: not a directory and not in the Hugging Face cache "
                         f"{constants.HF_HUB_CACHE} (download it with: {fetch})") from None
    except IncompleteSnapshotError:
        raise InputError(f"model {name}: its cached snapshot is missing files (download it again with: "
                         f"hf download {name})") from None
