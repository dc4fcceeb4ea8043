"""What the long-running processes (worker, coordinator) say as they go: one line each on
stderr, `[who] message`, through stdlib logging (logger "tunefleet"), so that an
application embedding them can route, filter or silence it as it does any other library's."""

from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("tunefleet")


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirected stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def to_stderr(who: str) -> None:
    """This process's lines read `[who] message`; once per process, the latest `who` wins."""
    for handler in [h for h in LOG.handlers if isinstance(h, _Stderr)]:
        LOG.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter(f"[{who}] %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False  # the application's root handlers would print each line twice
