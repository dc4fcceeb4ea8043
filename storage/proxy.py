"""The coordinator's storage proxy: Optuna's gRPC storage service and the artifact
service on one port, over one small pool of database connections.

Workers given grpc://HOST:PORT hold no database connection of their own, so a
fleet of any size costs the database only the coordinator's pool; each worker
keeps Optuna's client-side cache of finished trials and reads only what changed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc

from storage import outage


def start(storage, artifact_store, host: str, port: int, threads: int):
    """Starts serving `storage` (best an RDBStorage behind Optuna's cache of finished trials,
    optuna.storages.get_storage) and `artifact_store`; the grpc.Server."""
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    from storage.grpc_artifacts import handler

    server = grpc.server(ThreadPoolExecutor(max_workers=threads), interceptors=[_Outages()])
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    server.add_generic_rpc_handlers((handler(artifact_store),))
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    server.start()
    return server


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
