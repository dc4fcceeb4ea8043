"""The coordinator's trials snapshot (storage/proxy.py) and the workers' cache of it
(storage/grpc_client.py), on a real Optuna storage served over real gRPC: a worker
gets what it lacks and nothing twice, sees new results within a snapshot's time,
and its sampler's many reads cost the coordinator one."""

from __future__ import annotations

import time

import optuna
from conftest import free_port
from optuna.trial import TrialState

from storage import open_storage, proxy
from storage import optuna_compat as compat


def _served():
    backend = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=backend, study_name="s")
    port = free_port()
    server = proxy.start(backend, None, "127.0.0.1", port, threads=4)
    return backend, study, server, port


def test_a_read_returns_the_newer_trials_and_the_unfinished_ones_asked_for_once_each():
    finished = {}
    def trial(trial_id, state, value):
        return optuna.trial.FrozenTrial(number=trial_id - 10, state=state, value=value, datetime_start=None,
                                        datetime_complete=None, params={}, distributions={}, user_attrs={},
                                        system_attrs={}, intermediate_values={}, trial_id=trial_id)

    trials = [trial(10 + i, TrialState.COMPLETE, float(i)) for i in range(6)]
    trials[2] = trial(12, TrialState.RUNNING, None)
    snapshot = proxy._Snapshot(0.0, list(reversed(trials)), finished)
    ids = lambda reply: [t.trial_id for t in reply]  # noqa: E731
    assert sorted(ids(snapshot.newer_than(-1, []))) == list(range(10, 16))
    assert sorted(ids(snapshot.newer_than(13, [12]))) == [12, 14, 15]
    assert sorted(ids(snapshot.newer_than(11, [12, 99]))) == [12, 13, 14, 15], "no duplicate, no unknown id"
    assert set(finished) == {10, 11, 13, 14, 15}, "finished trials are encoded for good, running ones per read"
    assert snapshot.newer_than(-1, [])[0] is finished[10], "encoded once"


def test_workers_see_new_results_within_a_snapshot_and_read_once_per_snapshot(monkeypatch):
    calls = []
    real = proxy._Service.GetTrials  # counted where the coordinator answers, before it serves
    monkeypatch.setattr(proxy._Service, "GetTrials", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    backend, study, server, port = _served()
    try:
        worker = optuna.load_study(study_name="s", storage=open_storage(f"grpc://127.0.0.1:{port}"))
        assert worker.get_trials() == []
        calls.clear()
        study.add_trial(optuna.trial.create_trial(value=1.0))
        for _ in range(50):  # a sampler's reads, one per parameter
            worker.get_trials(deepcopy=False)
        assert len(calls) <= 1
        time.sleep(2 * proxy.SNAPSHOT_S + 0.1)
        assert [t.value for t in worker.get_trials(deepcopy=False)] == [1.0], "seen once the snapshot's time passed"
        own = worker.ask()
        own.report(0.5, 1)
        fresh = compat.storage_of(worker).get_trial(compat.trial_id(own))
        assert fresh.intermediate_values == {1: 0.5}, "a trial's own reads are fresh"
    finally:
        server.stop(0)
