"""A worker's client of the coordinator's storage proxy: Optuna's own, on a channel
that gives up on a dead link (storage/grpc_channel.py), asking for the study's
trials at most once per the coordinator's snapshot."""

from __future__ import annotations

import time

from optuna.storages import GrpcStorageProxy
from optuna.storages._grpc.auto_generated.api_pb2_grpc import StorageServiceStub
from optuna.storages._grpc.client import GrpcClientCache

from storage.grpc_channel import CALL_DEADLINE_S, SNAPSHOT_S, channel


class StorageProxy(GrpcStorageProxy):
    """Optuna's GrpcStorageProxy with keepalives, a deadline on every call, and a cache
    of the study's trials that reads again only once a snapshot's time has passed."""

    def _setup(self) -> None:
        self._channel = channel(self._host, self._port, deadline_s=CALL_DEADLINE_S)
        self._stub = StorageServiceStub(self._channel)
        self._cache = _SnapshotCache(self._stub)


class _SnapshotCache(GrpcClientCache):
    """The sampler asks for the study's trials once per parameter it samples and the
    pruner at every evaluation; the coordinator's answer changes once per SNAPSHOT_S,
    so asking again sooner only costs it. A trial's own reads and writes (get_trial,
    report, tell) are not cached: they always reach the coordinator."""

    def __init__(self, grpc_client) -> None:
        super().__init__(grpc_client)
        self._read_at: dict[int, float] = {}

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        now, read_at = time.monotonic(), self._read_at.get(study_id)
        if read_at is not None and study_id in self.studies and now - read_at < SNAPSHOT_S:
            return
        super()._read_trials_from_remote_storage(study_id)
        self._read_at[study_id] = now
