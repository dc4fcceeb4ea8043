"""The private corners of Optuna that tunefleet relies on (storage/optuna_compat.py) still
behave as it relies on them: when Optuna changes underneath, this fails first and loudly."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from storage import open_storage
from storage import optuna_compat as compat


def test_the_installed_optuna_is_one_this_was_tested_on():
    minor = ".".join(optuna.__version__.split(".")[:2])
    assert minor in compat.TESTED, f"optuna {optuna.__version__}: check storage/optuna_compat.py, then add it"


def test_ids_storage_and_the_trials_cache(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'j.log'}")
    study = optuna.create_study(study_name="s", storage=storage)
    assert compat.storage_of(study) is storage
    assert compat.study_id(study) == storage.get_study_id_from_name("s")
    trial = study.ask()
    frozen = study.get_trials()[0]
    assert compat.trial_id(trial) == compat.trial_id(frozen) == storage.get_trial_id_from_study_id_trial_number(
        compat.study_id(study), 0)
    study.tell(trial, 1.0)
    assert [t.number for t in compat.cached_trials(study, (TrialState.COMPLETE,))] == [0]
    # A trial written behind the study's back shows once its cache is forgotten, as ask() does.
    storage.create_new_trial(compat.study_id(study), template_trial=optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=0.5, params={}, distributions={}))
    compat.forget_cached_trials(study)
    assert len(compat.cached_trials(study, (TrialState.COMPLETE,))) == 2


def test_tpe_hooks_are_called_and_steer_the_proposal():
    calls = {"before": 0, "acquisition": 0}

    class Left(compat.HookedTPESampler):
        def before_sample(self, study, search_space):
            calls["before"] += 1
            assert set(search_space) == {"x"}

        def acquisition(self, values, samples):
            calls["acquisition"] += 1
            return values - 1e9 * (samples["x"] > 0.2)  # only the left fifth is worth proposing

    def proposals(sampler):
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.9) ** 2, n_trials=12)
        return sorted(t.params["x"] for t in study.trials[3:])

    steered = proposals(Left(n_startup_trials=3, multivariate=True, seed=0))
    assert calls["before"] == 9 and calls["acquisition"] >= 9
    # (When no candidate falls in the left fifth, the least bad one is proposed anyway.)
    assert steered[len(steered) // 2] <= 0.2, steered
    plain = proposals(optuna.samplers.TPESampler(n_startup_trials=3, multivariate=True, seed=0))
    assert plain[len(plain) // 2] > 0.5, plain


def test_the_grpc_proxy_internals(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'j.log'}")
    for name in ("api_pb2", "api_pb2_grpc", "StorageServiceStub", "GrpcClientCache", "to_proto_trial"):
        assert getattr(compat, name) is not None, name
    service = compat.OptunaStorageProxyService(storage)
    assert compat.proxy_backend(service) is storage
    study = optuna.create_study(storage=storage)
    study.tell(study.ask(), 2.0)
    encoded = compat.to_proto_trial(study.get_trials()[0])
    assert isinstance(encoded, compat.api_pb2.Trial) and encoded.trial_id == compat.trial_id(study.get_trials()[0])
    # HookedGrpcStorageProxy's hooks are exercised against a real proxy by tests/test_snapshot.py.


def test_the_database_storage_behind_optunas_cache(pg_url):
    rdb = open_storage(pg_url)
    cached = optuna.storages.get_storage(rdb)
    assert cached is not rdb and compat.rdb_of(cached) is rdb and compat.rdb_of(rdb) is rdb
    assert compat.rdb_of(cached).engine.dialect.name == "postgresql"
