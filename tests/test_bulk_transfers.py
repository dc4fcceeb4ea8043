"""The coordinator under bulk transfers (storage/grpc_artifacts.py): checkpoint streams
beyond the coordinator's transfer slots wait their turn, small calls never wait behind
them, and a busy connection pool is an outage to wait out, not an error. Real
PostgreSQL, a real gRPC server."""

from __future__ import annotations

import io
import os
import threading

import optuna
import pytest

from conftest import free_port
from storage import backend, grpc_artifacts, outage, proxy
from storage import optuna_compat as compat
from storage.connect import proxy_storage

MiB = 1 << 20


@pytest.fixture
def served(pg_url, monkeypatch):
    """A coordinator's server with one thread for small calls and one transfer slot."""
    monkeypatch.setattr(grpc_artifacts, "BUSY_WAIT_S", (0.05, 0.2))
    where = backend(pg_url)
    storage = where.open(3)
    port = free_port()
    server = proxy.start(storage, where.artifacts(storage, transfers=1), "127.0.0.1", port, threads=1, transfers=1)
    yield port
    server.stop(0)


def test_a_transfer_beyond_the_slots_waits_its_turn_and_small_calls_do_not(served):
    store = grpc_artifacts.GrpcArtifactStore("127.0.0.1", served)
    # The download bigger than gRPC's flow-control windows, so the server cannot finish it early.
    first, second = os.urandom(32 * MiB), os.urandom(3 * MiB + 17)
    store.write("first", io.BytesIO(first))

    holding = store.open_reader("first")  # a slow download holds the only slot
    assert holding.read(MiB) == first[:MiB]

    uploaded = threading.Event()
    uploader = threading.Thread(target=lambda: (store.write("second", io.BytesIO(second)), uploaded.set()))
    uploader.start()
    # A lease renewal, on the one thread for small calls, answers meanwhile.
    storage = proxy_storage("127.0.0.1", served)
    study = optuna.create_study(storage=storage, study_name="s")
    trial_id = compat.trial_id(study.ask())
    renewed = threading.Thread(target=storage.set_trial_system_attr, args=(trial_id, "lease", {"expires": 1.0}))
    renewed.start()
    renewed.join(timeout=10)
    assert not renewed.is_alive()
    assert storage.get_trial(trial_id).system_attrs["lease"] == {"expires": 1.0}
    assert not uploaded.wait(1.0), "the upload ran beside the download: the slot did not hold"

    assert holding.read() == first[MiB:]
    holding.close()
    uploader.join(timeout=30)
    assert uploaded.is_set()
    with store.open_reader("second") as f:  # refused attempts rewound the file: nothing lost or doubled
        assert f.read() == second


def test_an_abandoned_download_frees_its_slot(served):
    store = grpc_artifacts.GrpcArtifactStore("127.0.0.1", served)
    store.write("a", io.BytesIO(os.urandom(4 * MiB)))
    reader = store.open_reader("a")
    reader.read(10)
    reader.close()  # cancelled mid-stream
    done = threading.Thread(target=store.write, args=("b", io.BytesIO(b"after")))
    done.start()
    done.join(timeout=10)
    assert not done.is_alive()
    with store.open_reader("b") as f:
        assert f.read() == b"after"


def test_a_connection_pool_with_every_connection_busy_is_an_outage(pg_url):
    import sqlalchemy

    engine = sqlalchemy.create_engine(backend(pg_url).url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    with engine.connect():
        with pytest.raises(sqlalchemy.exc.TimeoutError) as busy:
            engine.connect()
    assert outage.unreachable(busy.value)
