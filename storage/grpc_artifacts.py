"""Artifacts through the coordinator: a gRPC service beside Optuna's storage proxy,
so a worker that reaches the coordinator reaches the checkpoints too, holding no
database connection. Raw bytes in 1 MiB chunks, no generated code; both sides here.

Uploads and downloads are bulk: a checkpoint streams for seconds to minutes, holding
a server thread (and, in PostgreSQL, a connection) all along. The coordinator serves
at most `transfers` of them at once, on threads of their own; one more is answered
RESOURCE_EXHAUSTED at once and its worker tries again after a while, so the small
calls (lease renewals, claims, reports) never queue behind a fleet's checkpoints."""

from __future__ import annotations

import io
import random
import threading
import time
from typing import BinaryIO, Iterator

from optuna.artifacts.exceptions import ArtifactNotFound

from storage.chunks import ChunkReader

SERVICE = "tunefleet.Artifacts"
CHUNK = 1 << 20  # under gRPC's default 4 MiB message limit
TRANSFERS = 4  # bulk streams served at once by default: enough to keep a disk or a link busy
BUSY_WAIT_S = (1.0, 30.0)  # a refused transfer tries again after 1 s, doubling to 30 s


def handler(store, transfers: int = TRANSFERS):
    """The server side, over any Optuna ArtifactStore; at most `transfers` streams at once."""
    import grpc

    slots = threading.BoundedSemaphore(transfers)

    def take_slot(context):
        if not slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"all {transfers} transfer slots are busy")

    def write(chunks, context):
        take_slot(context)
        try:
            store.write(dict(context.invocation_metadata())["artifact-id"], io.BufferedReader(ChunkReader(chunks)))
        finally:
            slots.release()
        return b""

    def read(artifact_id: bytes, context):
        take_slot(context)
        try:  # the slot is freed when the stream ends, fails or is cancelled (the generator closes)
            try:
                reader = store.open_reader(artifact_id.decode())
            except ArtifactNotFound as e:
                context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            with reader:
                while chunk := reader.read(CHUNK):
                    yield chunk
        finally:
            slots.release()

    def remove(artifact_id: bytes, context):
        try:
            store.remove(artifact_id.decode())
        except ArtifactNotFound as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        return b""

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Write": grpc.stream_unary_rpc_method_handler(write),
        "Read": grpc.unary_stream_rpc_method_handler(read),
        "Remove": grpc.unary_unary_rpc_method_handler(remove),
    })


class GrpcArtifactStore:
    """The worker side: an Optuna ArtifactStore at the coordinator's address."""

    def __init__(self, host: str, port: int):
        import grpc

        from storage.grpc_channel import channel as open_channel

        self._grpc = grpc
        channel = open_channel(host, port)  # keepalives, no deadline: a checkpoint may take minutes
        self._write = channel.stream_unary(f"/{SERVICE}/Write")
        self._read = channel.unary_stream(f"/{SERVICE}/Read")
        self._remove = channel.unary_unary(f"/{SERVICE}/Remove")

    def open_reader(self, artifact_id: str) -> BinaryIO:
        def opened():
            stream = self._read(artifact_id.encode())
            return stream, next(stream, b"")

        try:
            stream, first = self._when_free(opened)
        except self._grpc.RpcError as e:
            raise self._not_found(e, artifact_id) from e
        return io.BufferedReader(ChunkReader(_then(first, stream), on_close=stream.cancel))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        start = content_body.tell()

        def upload():
            body = _Body(content_body, start)
            try:
                self._write(iter(body), metadata=(("artifact-id", artifact_id),))
            finally:
                body.end()  # gRPC's sender thread reads no more of it once the call is over

        self._when_free(upload)

    def remove(self, artifact_id: str) -> None:
        try:
            self._remove(artifact_id.encode())
        except self._grpc.RpcError as e:
            raise self._not_found(e, artifact_id) from e

    def _when_free(self, transfer):
        """transfer(), tried again while the coordinator's transfer slots are all busy."""
        wait = BUSY_WAIT_S[0]
        while True:
            try:
                return transfer()
            except self._grpc.RpcError as e:
                if e.code() != self._grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
            time.sleep(wait * random.uniform(0.5, 1.0))  # jittered: refused workers do not return as one
            wait = min(2 * wait, BUSY_WAIT_S[1])

    def _not_found(self, error, artifact_id: str) -> Exception:
        if error.code() == self._grpc.StatusCode.NOT_FOUND:
            return ArtifactNotFound(f"artifact {artifact_id} not found")
        return error


class _Body:
    """One attempt's chunks of a file, from `start`: rewound for each attempt, and ended
    under a lock so that a refused attempt's sender cannot read on into the next one."""

    def __init__(self, file: BinaryIO, start: int):
        self._file, self._lock, self._over = file, threading.Lock(), False
        file.seek(start)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._lock:
                data = b"" if self._over else self._file.read(CHUNK)
            if not data:
                return
            yield data

    def end(self) -> None:
        with self._lock:
            self._over = True


def _then(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
