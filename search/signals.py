"""SIGINT and SIGTERM as a flag, read by the long-running commands (worker, coordinator,
ray-workers) between and during their work (no heavy imports)."""

from __future__ import annotations

import signal


class Stop:
    """Set by SIGINT/SIGTERM."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def __call__(self) -> bool:
        return self.requested
