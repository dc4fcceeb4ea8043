"""The worker's scratch disk: room for a checkpoint before it is written, and a failed
write told as what it is (a full disk and the directory), not as torch's or tar's words."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT)
FULL_WORDS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))
# torch's zip writer when a write fails under it: "[enforce fail at inline_container.cc:672] .
# unexpected pos 844992 vs 844880" (a full disk, in practice).
TORCH_WRITER = ("inline_container", "PytorchStreamWriter")


class NoSpace(OSError):
    """Not enough room on the scratch disk for what is about to be written."""

    def __init__(self, directory, needed: int, free: int):
        super().__init__(errno.ENOSPC, f"no space left on device in {directory}: {_mib(needed)} needed "
                                       f"for a checkpoint, {_mib(free)} free", str(directory))

    def __str__(self):
        return self.strerror


def free_bytes(directory) -> int:
    """Free bytes on the filesystem of directory (or of its nearest existing parent)."""
    path = Path(directory)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def ensure_room(directory, needed: int) -> None:
    """Raises NoSpace unless the filesystem of directory has `needed` bytes free."""
    free = free_bytes(directory)
    if free < needed:
        raise NoSpace(directory, needed, free)


def explain(error: BaseException, directory) -> str | None:
    """One line for a write that failed for lack of room (the error or one it came from),
    naming the path and the free space; None for any other error."""
    seen = error
    while seen is not None:
        if isinstance(seen, NoSpace):
            return str(seen)
        if isinstance(seen, OSError) and seen.errno in FULL:
            where = seen.filename or directory
            return f"no space left on device writing {where} ({_mib(free_bytes(where))} free)"
        first = (str(seen).strip().splitlines() or [""])[0]
        if any(s in first for s in FULL_WORDS):  # a library's own error around the OSError (safetensors)
            return f"no space left on device writing {directory} ({_mib(free_bytes(directory))} free): {first}"
        if isinstance(seen, RuntimeError) and any(s in first for s in TORCH_WRITER):
            return (f"writing a checkpoint in {directory} failed with {_mib(free_bytes(directory))} free "
                    f"there (a full disk?): {first}")
        seen = seen.__cause__ or seen.__context__
    return None


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"
