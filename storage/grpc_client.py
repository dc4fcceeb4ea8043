"""A worker's client of the coordinator's storage proxy: Optuna's own, on a channel
that gives up on a dead link (storage/grpc_channel.py), asking for the study's
trials at most once per the coordinator's snapshot."""

from __future__ import annotations

import time

from storage import optuna_compat as compat
from storage.grpc_channel import CALL_DEADLINE_S, SNAPSHOT_S, channel


class StorageProxy(compat.HookedGrpcStorageProxy):
    """Optuna's GrpcStorageProxy with keepalives, a deadline on every call, and a cache
    of the study's trials that reads again only once a snapshot's time has passed.

    The sampler asks for the study's trials once per parameter it samples and the pruner
    at every evaluation; the coordinator's answer changes once per SNAPSHOT_S, so asking
    again sooner only costs it. A trial's own reads and writes (get_trial, report, tell)
    are not cached: they always reach the coordinator."""

    def make_channel(self, host: str, port: int):
        self._read_at: dict[int, float] = {}
        return channel(host, port, deadline_s=CALL_DEADLINE_S)

    def read_again(self, study_id: int, cached: bool) -> bool:
        now, read_at = time.monotonic(), self._read_at.get(study_id)
        if read_at is not None and cached and now - read_at < SNAPSHOT_S:
            return False
        self._read_at[study_id] = now
        return True
