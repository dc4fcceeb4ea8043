"""The artifact stores behind checkpoints and curves: real PostgreSQL, real files."""

from __future__ import annotations

import io
import os

import pytest
from optuna.artifacts.exceptions import ArtifactNotFound

from storage import backend, open_storage
from storage import pg_artifacts


@pytest.fixture(params=["postgresql", "journal", "coordinator"])
def store(request, tmp_path):
    if request.param == "coordinator":  # its artifact service, in front of a directory
        yield from _served(tmp_path)
        return
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"journal:{tmp_path / 'journal.log'}"
    yield backend(url).artifacts(open_storage(url))


def _served(tmp_path):
    import socket

    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from storage import proxy
    from storage.grpc_artifacts import GrpcArtifactStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "served").mkdir()
    server = proxy.start(optuna.storages.InMemoryStorage(), FileSystemArtifactStore(str(tmp_path / "served")),
                         "127.0.0.1", port, 4)
    yield GrpcArtifactStore("127.0.0.1", port)
    server.stop(0)


def test_round_trip_of_a_many_chunk_artifact(store, monkeypatch):
    from storage import grpc_artifacts

    monkeypatch.setattr(pg_artifacts, "CHUNK", 1000)  # many chunks without many megabytes
    monkeypatch.setattr(grpc_artifacts, "CHUNK", 1000)
    body = os.urandom(4321)
    store.write("a1", io.BytesIO(body))
    with store.open_reader("a1") as f:
        assert f.read() == body
    with store.open_reader("a1") as f:  # small reads across chunk borders
        assert b"".join(iter(lambda: f.read(333), b"")) == body


def test_empty_artifact_overwrite_and_remove(store):
    store.write("e", io.BytesIO(b""))
    with store.open_reader("e") as f:
        assert f.read() == b""
    store.write("e", io.BytesIO(b"second"))
    with store.open_reader("e") as f:
        assert f.read() == b"second"
    store.remove("e")
    with pytest.raises(ArtifactNotFound):
        store.open_reader("e")
    with pytest.raises(ArtifactNotFound):
        store.remove("e")


def test_a_failed_upload_leaves_nothing(pg_url):
    store = backend(pg_url).artifacts(open_storage(pg_url))

    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise OSError("disk gone")

    with pytest.raises(OSError):
        store.write("half", Broken())
    with pytest.raises(ArtifactNotFound):
        store.open_reader("half")


def test_an_explicit_directory_wins(tmp_path, pg_url):
    store = backend(pg_url).artifacts(open_storage(pg_url), str(tmp_path / "shared"))
    store.write("x", io.BytesIO(b"on the shared disk"))
    assert (tmp_path / "shared" / "x").read_bytes() == b"on the shared disk"
