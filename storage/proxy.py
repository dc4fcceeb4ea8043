"""The coordinator's storage proxy: Optuna's gRPC storage service and the artifact
service on one port, over one small pool of database connections.

Workers given grpc://HOST:PORT hold no database connection of their own, so a
fleet of any size costs the database only the coordinator's pool; each worker
keeps Optuna's client-side cache of finished trials and reads only what changed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc
from optuna.storages._grpc.servicer import OptunaStorageProxyService, _to_proto_trial

from storage import outage

SNAPSHOT_S = 0.5  # how stale a worker's view of the other trials may be


def start(storage, artifact_store, host: str, port: int, threads: int, handlers=()):
    """Starts serving `storage` (best an RDBStorage behind Optuna's cache of finished trials,
    optuna.storages.get_storage), `artifact_store` and any other generic `handlers`; the grpc.Server."""
    from storage.grpc_artifacts import handler
    from storage.grpc_channel import SERVER_OPTIONS

    server = grpc.server(ThreadPoolExecutor(max_workers=threads), interceptors=[_Outages()], options=SERVER_OPTIONS)
    api_pb2_grpc.add_StorageServiceServicer_to_server(_Service(storage), server)
    server.add_generic_rpc_handlers((handler(artifact_store), *handlers))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    server.start()
    return server


class _Service(OptunaStorageProxyService):
    """Optuna's storage service, with the study's trials read once per SNAPSHOT_S for all
    workers, not once per worker's read: each worker's pruner and sampler read them at
    every evaluation, and reading the running trials costs the database more the more
    workers run, so per-read it grows as workers squared. Finished trials never change:
    each is encoded once."""

    def __init__(self, storage, snapshot_s: float = SNAPSHOT_S):
        super().__init__(storage)
        self._snapshot_s = snapshot_s
        self._snapshots: dict[int, tuple[float, list]] = {}
        self._reading = threading.Lock()  # one read at a time; those waiting take its result
        self._encoded: dict[int, api_pb2.Trial] = {}

    def GetTrials(self, request, context):
        try:
            trials = self._trials(request.study_id)
        except KeyError as e:
            context.abort(code=grpc.StatusCode.NOT_FOUND, details=str(e))
        wanted, after = set(request.included_trial_ids), request.trial_id_greater_than
        return api_pb2.GetTrialsReply(trials=[self._encode(t) for t in trials
                                              if t._trial_id > after or t._trial_id in wanted])

    def _trials(self, study_id: int) -> list:
        asked = time.monotonic()
        with self._reading:
            at, trials = self._snapshots.get(study_id, (0.0, None))
            if at < asked - self._snapshot_s:  # taken before this call's half second: read anew
                at, trials = time.monotonic(), self._backend.get_all_trials(study_id, deepcopy=False)
                self._snapshots[study_id] = (at, trials)
        return trials

    def _encode(self, trial) -> api_pb2.Trial:
        if not trial.state.is_finished():
            return _to_proto_trial(trial)
        encoded = self._encoded.get(trial._trial_id)
        if encoded is None:
            encoded = self._encoded[trial._trial_id] = _to_proto_trial(trial)
        return encoded


class _Outages(grpc.ServerInterceptor):
    """Answers UNAVAILABLE, not UNKNOWN, while the database is away, so workers wait
    for it (storage/outage.py) instead of failing their trials."""

    def intercept_service(self, continuation, details):
        inner = continuation(details)
        if inner is None or inner.unary_unary is None:
            return inner

        def call(request, context):
            try:
                return inner.unary_unary(request, context)
            except Exception as e:
                if outage.unreachable(e):
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unreachable")
                raise

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=inner.request_deserializer,
                                                   response_serializer=inner.response_serializer)
