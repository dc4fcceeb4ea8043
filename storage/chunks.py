"""A readable file over a stream of byte chunks: how the artifact stores hand out an
artifact that arrives in pieces (rows of PostgreSQL, messages of a gRPC stream)
without holding more than one piece in memory."""

from __future__ import annotations

import io
from typing import Callable, Iterator


class ChunkReader(io.RawIOBase):
    """Reads `chunks` in order; `on_close` runs once when the file is closed (to end a stream)."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None] | None = None):
        self._chunks, self._pending, self._on_close = chunks, memoryview(b""), on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, b"")
            if not chunk:
                return 0
            self._pending = memoryview(chunk)  # sliced without copying as it is read
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n

    def close(self) -> None:
        if self._on_close is not None and not self.closed:
            self._on_close()
        super().close()
