"""Artifacts through the coordinator: a gRPC service beside Optuna's storage proxy,
so a worker that reaches the coordinator reaches the checkpoints too, holding no
database connection. Raw bytes in 1 MiB chunks, no generated code; both sides here."""

from __future__ import annotations

import io
from typing import BinaryIO, Iterator

from optuna.artifacts.exceptions import ArtifactNotFound

from storage.chunks import ChunkReader

SERVICE = "tunefleet.Artifacts"
CHUNK = 1 << 20  # under gRPC's default 4 MiB message limit


def handler(store):
    """The server side, over any Optuna ArtifactStore."""
    import grpc

    def write(chunks, context):
        store.write(dict(context.invocation_metadata())["artifact-id"], io.BufferedReader(ChunkReader(chunks)))
        return b""

    def read(artifact_id: bytes, context):
        try:
            reader = store.open_reader(artifact_id.decode())
        except ArtifactNotFound as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        with reader:
            while chunk := reader.read(CHUNK):
                yield chunk

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
        stream = self._read(artifact_id.encode())
        try:
            first = next(stream, b"")
        except self._grpc.RpcError as e:
            raise self._not_found(e, artifact_id) from e
        return io.BufferedReader(ChunkReader(_then(first, stream), on_close=stream.cancel))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._write(iter(lambda: content_body.read(CHUNK), b""), metadata=(("artifact-id", artifact_id),))

    def remove(self, artifact_id: str) -> None:
        try:
            self._remove(artifact_id.encode())
        except self._grpc.RpcError as e:
            raise self._not_found(e, artifact_id) from e

    def _not_found(self, error, artifact_id: str) -> Exception:
        if error.code() == self._grpc.StatusCode.NOT_FOUND:
            return ArtifactNotFound(f"artifact {artifact_id} not found")
        return error


def _then(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
