"""The ready queue over the wire (search/ready.py is the queue): the coordinator serves its
Take and Open calls beside the storage service on the same gRPC server (storage/proxy.py),
and a worker behind the proxy calls them on the channel its storage already holds. The
payloads are a study's or trial's id and a JSON answer: no protobuf schema to keep."""

from __future__ import annotations

import json

import optuna

from search import ready
from storage import optuna_compat as compat

SERVICE = "tunefleet.Ready"


def handler(queue: ready.Queue, storage):
    """The Take and Open calls, served beside the storage service (storage/proxy.py)."""
    import grpc

    def take(request: bytes, context) -> bytes:
        return json.dumps(queue.take(storage, int(request))).encode()

    def open_(request: bytes, context) -> bytes:
        return json.dumps(queue.open(int(request))).encode()

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Take": grpc.unary_unary_rpc_method_handler(take),
        "Open": grpc.unary_unary_rpc_method_handler(open_),
    })


def pop(study: optuna.Study) -> optuna.Trial | None:
    """Takes a ready trial from the coordinator, or None if none is queued for now."""
    trial_id = _call(study, "Take")
    return None if trial_id is None else ready.running(study, trial_id)


def more_may_come(study: optuna.Study) -> bool:
    """The coordinator will queue more trials: the study is neither stopped nor spent."""
    return bool(_call(study, "Open"))


def _call(study: optuna.Study, method: str):
    call = compat.proxy_channel(compat.storage_of(study)).unary_unary(f"/{SERVICE}/{method}")
    return json.loads(call(str(compat.study_id(study)).encode()))
