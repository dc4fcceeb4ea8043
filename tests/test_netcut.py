"""Chaos, bounded: a worker's network cut (tests/netcut.py, a blackhole: no error
reaches it, its calls just hang), with the worker reaching PostgreSQL itself or
through the coordinator. It loses its lease, its trial is resumed elsewhere, and
when the link comes back it writes nothing into the study and exits cleanly."""

from __future__ import annotations

import time

import optuna
import pytest
from conftest import free_port, start_tunefleet, tunefleet
from netcut import Forwarder
from optuna.trial import TrialState

from storage import open_storage
from storage import optuna_compat as compat


def test_a_cut_link_fails_a_call_as_an_outage_not_a_hang():
    """The deadline every storage call through the coordinator carries (keepalives do the
    same for a long call, in about 30 s)."""
    import grpc
    from storage.optuna_compat import api_pb2, api_pb2_grpc

    from storage import outage, proxy
    from storage.grpc_channel import channel

    storage = optuna.storages.InMemoryStorage()
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    port = free_port()
    server = proxy.start(storage, None, "127.0.0.1", port, threads=4)
    link = Forwarder(port)
    try:
        stub = api_pb2_grpc.StorageServiceStub(channel("127.0.0.1", link.port, deadline_s=1.0))
        ask = lambda: stub.GetStudyIdFromName(api_pb2.GetStudyIdFromNameRequest(study_name="s"))  # noqa: E731
        assert ask().study_id == study_id
        link.cut()
        started = time.time()
        with pytest.raises(grpc.RpcError) as cut:
            ask()
        assert time.time() - started < 5 and outage.unreachable(cut.value), cut.value
        link.restore()
        assert ask().study_id == study_id
    finally:
        link.close()
        server.stop(0)


def test_a_worker_whose_renewals_hang_knows_its_lease_is_lost():
    """A renewal hung on a cut link never fails, so the heartbeat counts: no renewal through
    for a whole lease means the lease may have been collected, so stop working on the trial."""
    from search.leases import Heartbeat

    from storage import proxy

    backend = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=backend, study_name="s")
    trial_id = compat.trial_id(study.ask())
    port = free_port()
    server = proxy.start(backend, None, "127.0.0.1", port, threads=4)
    link = Forwarder(port)
    try:
        with Heartbeat(open_storage(f"grpc://127.0.0.1:{link.port}"), trial_id, lease_seconds=1.0) as lease:
            time.sleep(0.6)
            assert not lease.lost and "tunefleet.lease" in backend.get_trial(trial_id).system_attrs
            link.cut()
            time.sleep(1.6)
            assert lease.lost
            left = time.time()
        assert time.time() - left < 2, "leaving the lease must not wait for the hung renewal"
    finally:
        link.close()
        server.stop(0)


@pytest.mark.parametrize("route", ["database", "coordinator"])
def test_a_worker_cut_off_loses_its_lease_and_comes_back_without_harm(tiny, tmp_path, pg_url, route):
    model, dataset = tiny
    assert tunefleet("study", "create", "cut", "--model", model, "--dataset", dataset, "--method", "lora",
                     "--n-trials", 1, "--max-steps", 80, "--eval-steps", 10, "--seq-len", 48, "--lease-seconds", 3,
                     "--pruner", "none", "--storage", pg_url, cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name="cut", storage=open_storage(pg_url))
    coordinator = None
    if route == "database":
        link = Forwarder(5432)
        cut_url, direct_url = pg_url.replace(":5432/", f":{link.port}/"), pg_url
    else:
        port = free_port()
        coordinator = start_tunefleet("coordinator", "--serve", f"127.0.0.1:{port}", "--interval", 0.5,
                                      "--connections", 4, "--storage", pg_url, cwd=tmp_path)
        link = Forwarder(port)
        cut_url, direct_url = f"grpc://127.0.0.1:{link.port}", f"grpc://127.0.0.1:{port}"
    try:
        first = start_tunefleet("worker", "cut", "--threads", 1, "--storage", cut_url, cwd=tmp_path)
        deadline = time.time() + 120
        while not any(t.intermediate_values for t in study.get_trials(states=(TrialState.RUNNING,))):
            assert time.time() < deadline and first.poll() is None, first.communicate()[0] if first.poll() else ""
            time.sleep(0.1)
        link.cut()
        at_cut = study.get_trials()[0].intermediate_values
        second = start_tunefleet("worker", "cut", "--threads", 1, "--storage", direct_url, cwd=tmp_path)
        while study.get_trials()[0].state != TrialState.FAIL or len(study.get_trials()) < 2:
            assert time.time() < deadline + 60 and second.poll() is None, "the cut-off trial was never collected"
            time.sleep(0.1)
        time.sleep(1)  # the first worker is still cut off while the resumed trial runs
        link.restore()
        log_first, log_second = first.communicate(timeout=240)[0], second.communicate(timeout=240)[0]
    finally:
        link.close()
        if coordinator is not None:
            coordinator.terminate()
            coordinator.wait(timeout=30)
    assert first.returncode == 0 and second.returncode == 0, log_first + log_second
    assert "trial 0 dropped" in log_first, log_first
    assert "Traceback" not in log_first + log_second
    dead, resumed = study.get_trials()
    assert dead.state == TrialState.FAIL and resumed.state == TrialState.COMPLETE
    assert dead.intermediate_values == at_cut, "the cut-off worker wrote nothing after the cut"
    assert sorted(resumed.intermediate_values) == list(range(10, 81, 10))
