"""A worker's client of the coordinator's storage proxy: Optuna's own, on a channel
that gives up on a dead link (storage/grpc_channel.py)."""

from __future__ import annotations

from optuna.storages import GrpcStorageProxy
from optuna.storages._grpc.auto_generated.api_pb2_grpc import StorageServiceStub
from optuna.storages._grpc.client import GrpcClientCache

from storage.grpc_channel import CALL_DEADLINE_S, channel


class StorageProxy(GrpcStorageProxy):
    """Optuna's GrpcStorageProxy with keepalives and a deadline on every call."""

    def _setup(self) -> None:
        self._channel = channel(self._host, self._port, deadline_s=CALL_DEADLINE_S)
        self._stub = StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)
