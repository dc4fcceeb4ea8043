"""The coordinator's storage proxy: Optuna's gRPC storage service and the artifact
service on one port, over one small pool of database connections.

Workers given grpc://HOST:PORT hold no database connection of their own, so a
fleet of any size costs the database only the coordinator's pool; each worker
keeps Optuna's client-side cache of finished trials and reads only what changed.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from storage import optuna_compat as compat
from storage import outage
from storage.grpc_artifacts import TRANSFERS
from storage.grpc_channel import SERVER_OPTIONS, SNAPSHOT_S

FINISHED_KEPT = 200_000  # encoded finished trials (about 1 KB each): a study's worth many times over
SNAPSHOT_KEPT_S = 600.0  # a study's snapshot goes once nobody has read it this long


def start(storage, artifact_store, host: str, port: int, threads: int, handlers=(), transfers: int = TRANSFERS):
    """Starts serving `storage` (best an RDBStorage behind Optuna's cache of finished trials,
    optuna.storages.get_storage), `artifact_store` and any other generic `handlers`; the grpc.Server.
    `threads` serve the small calls; at most `transfers` artifact streams more run beside them."""
    from storage.grpc_artifacts import handler

    server = grpc.server(ThreadPoolExecutor(max_workers=threads + transfers), interceptors=[_Outages()],
                         options=SERVER_OPTIONS)
    compat.api_pb2_grpc.add_StorageServiceServicer_to_server(_Service(storage), server)
    server.add_generic_rpc_handlers((handler(artifact_store, transfers), *handlers))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    server.start()
    return server


class _Service(compat.OptunaStorageProxyService):
    """Optuna's storage service, with the study's trials read once per SNAPSHOT_S for all
    workers, not once per worker's read: each worker's pruner and sampler read them at
    every evaluation, and reading the running trials costs the database more the more
    workers run, so per-read it grows as workers squared. A trial is encoded once per
    snapshot (a finished one once for good), and a read finds what a worker lacks by
    index, not by a pass over the study's thousands of trials."""

    def __init__(self, storage, snapshot_s: float = SNAPSHOT_S):
        super().__init__(storage)
        self._snapshot_s = snapshot_s
        self._snapshots: dict[int, _Snapshot] = {}
        self._reading = threading.Lock()  # one database read at a time; the others take its result
        self._finished = _Recent(FINISHED_KEPT)  # trial id -> encoding; finished trials never change

    def GetTrials(self, request, context):
        try:
            snapshot = self._snapshot(request.study_id)
        except KeyError as e:
            context.abort(code=grpc.StatusCode.NOT_FOUND, details=str(e))
        return compat.api_pb2.GetTrialsReply(trials=snapshot.newer_than(request.trial_id_greater_than,
                                                                 request.included_trial_ids))

    def _snapshot(self, study_id: int) -> _Snapshot:
        asked = time.monotonic()
        with self._reading:
            snapshot = self._snapshots.get(study_id)
            if snapshot is None or snapshot.at < asked - self._snapshot_s:  # older than this call's half second
                # Studies nobody read for a while (deleted, or done) let go of their trials.
                for idle in [i for i, old in self._snapshots.items() if old.at < asked - SNAPSHOT_KEPT_S]:
                    del self._snapshots[idle]
                trials = compat.proxy_backend(self).get_all_trials(study_id, deepcopy=False)
                snapshot = self._snapshots[study_id] = _Snapshot(time.monotonic(), trials, self._finished)
        return snapshot


class _Recent:
    """A dict of at most `most` entries, the least recently used going first: the encodings
    of finished trials, kept for the studies being read, not for every study ever served."""

    def __init__(self, most: int):
        self._most, self._items = most, collections.OrderedDict()
        self._lock = threading.Lock()  # shared by every study's snapshot

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def __setitem__(self, key, value):
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._most:
                self._items.popitem(last=False)

    def __len__(self):
        return len(self._items)


class _Snapshot:
    """One read of a study's trials, as the workers' caches ask for them: those above
    the last finished id a worker holds, and the unfinished ones it holds."""

    def __init__(self, at: float, trials: list, finished: dict):
        self.at, self._finished = at, finished
        self._trials = sorted(trials, key=compat.trial_id)
        self._ids = [compat.trial_id(t) for t in self._trials]
        self._by_id = dict(zip(self._ids, self._trials))
        self._encoded: dict = {}  # trial id -> its protobuf encoding
        self._lock = threading.Lock()

    def newer_than(self, after: int, included) -> list:
        start = bisect.bisect_right(self._ids, after)
        wanted = [self._by_id[i] for i in included if i <= after and i in self._by_id]
        return [self._encode(t) for t in wanted + self._trials[start:]]

    def _encode(self, trial):
        cache = self._finished if trial.state.is_finished() else self._encoded
        key = compat.trial_id(trial)
        encoded = cache.get(key)
        if encoded is None:
            with self._lock:  # encoded once, whichever reader comes first
                encoded = cache.get(key)
                if encoded is None:
                    encoded = cache[key] = compat.to_proto_trial(trial)
        return encoded


class _Outages(grpc.ServerInterceptor):
    """Answers UNAVAILABLE, not UNKNOWN, while the database is away, so workers wait
    for it (storage/outage.py) instead of failing their trials: on the storage calls
    and on the artifacts' streaming ones (a checkpoint's upload, its download)."""

    def intercept_service(self, continuation, details):
        inner = continuation(details)
        if inner is None:
            return inner

        def guarded(method):
            def call(request, context):
                try:
                    return method(request, context)
                except Exception as e:
                    if outage.unreachable(e):
                        context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unreachable")
                    raise
            return call

        def guarded_stream(method):
            def call(request, context):
                try:
                    yield from method(request, context)
                except Exception as e:
                    if outage.unreachable(e):
                        context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unreachable")
                    raise
            return call

        codec = {"request_deserializer": inner.request_deserializer, "response_serializer": inner.response_serializer}
        if inner.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(guarded(inner.unary_unary), **codec)
        if inner.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(guarded(inner.stream_unary), **codec)
        if inner.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(guarded_stream(inner.unary_stream), **codec)
        return inner
