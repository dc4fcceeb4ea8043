"""Every use of Optuna's private API, in one place (tested in tests/test_optuna_compat.py).

tunefleet needs a few things Optuna has no public API for: a trial's storage id (to write
to a trial another process runs, or one that is not ours to `tell`), a study's storage
and id, the per-thread trials cache that `ask()` refreshes, TPE's sampling and
acquisition steps (the prior-guided sampler hooks into them), and the gRPC proxy's
generated stubs and servicer. Optuna is pinned to the minor versions these are tested on
(pyproject.toml); when one changes, the compatibility test fails, and this file is the one
to change.
"""

from __future__ import annotations

import importlib

import optuna
from optuna.samplers import TPESampler

TESTED = ("5.0",)  # Optuna minor versions this module is tested on

# The gRPC proxy's private modules, imported when first named (grpc is heavy for the CLI).
_GRPC = {
    "api_pb2": ("optuna.storages._grpc.auto_generated.api_pb2", None),
    "api_pb2_grpc": ("optuna.storages._grpc.auto_generated.api_pb2_grpc", None),
    "StorageServiceStub": ("optuna.storages._grpc.auto_generated.api_pb2_grpc", "StorageServiceStub"),
    "GrpcClientCache": ("optuna.storages._grpc.client", "GrpcClientCache"),
    "OptunaStorageProxyService": ("optuna.storages._grpc.servicer", "OptunaStorageProxyService"),
    "to_proto_trial": ("optuna.storages._grpc.servicer", "_to_proto_trial"),
}


def __getattr__(name: str):
    if name == "HookedGrpcStorageProxy":
        globals()[name] = _hooked_grpc_storage_proxy()  # built once, on first use
        return globals()[name]
    if name not in _GRPC:
        raise AttributeError(name)
    module, attr = _GRPC[name]
    found = importlib.import_module(module)
    return found if attr is None else getattr(found, attr)


def trial_id(trial) -> int:
    """The storage's id of a Trial or FrozenTrial (not its number)."""
    return trial._trial_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def rdb_of(storage) -> optuna.storages.BaseStorage:
    """The RDBStorage behind the cache of finished trials that optuna.storages.get_storage
    wraps it in, or the storage itself."""
    return getattr(storage, "_backend", storage)


def cached_trials(study: optuna.Study, states) -> list:
    """The study's trials in those states from its client cache (no storage round trip when
    nothing changed), as samplers read them."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


def study_id(study: optuna.Study) -> int:
    """The study's (or a StudySummary's) id in its storage (optuna-dashboard's URLs name studies by it)."""
    return study._study_id


def forget_cached_trials(study: optuna.Study) -> None:
    """As `ask()` does before it samples: the next read sees the latest history."""
    study._thread_local.cached_all_trials = None


def infeasible_score(trial) -> float:
    """How far TPE counts a trial as infeasible (> 0: it steers away from its region)."""
    from optuna.samplers._tpe.sampler import _get_infeasible_trial_score

    return _get_infeasible_trial_score(trial)


def proxy_channel(storage):
    """The gRPC channel of a GrpcStorageProxy (other services are called over it)."""
    return storage._channel


def proxy_backend(service) -> optuna.storages.BaseStorage:
    """The storage an OptunaStorageProxyService serves."""
    return service._backend


class HookedTPESampler(TPESampler):
    """TPE with its private steps exposed: `observed(trials)` picks, of the trials TPE reads,
    those it learns from; `before_sample(study, search_space)` runs as multivariate sampling
    starts, and `acquisition(values, samples)` may reshape TPE's acquisition values
    (log l(x) - log g(x)) of the candidates in its internal encoding."""

    def observed(self, trials: list) -> list:
        return trials

    def before_sample(self, study, search_space) -> None:
        pass

    def acquisition(self, values, samples):
        return values

    def _view(self, study):
        return study if isinstance(study, _ObservedStudy) else _ObservedStudy(study, self.observed)

    def _sample_relative(self, study, trial, search_space):
        return super()._sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return super().sample_independent(self._view(study), trial, param_name, param_distribution)

    def _sample(self, study, trial, search_space):
        study = self._view(study)
        self.before_sample(study, search_space)
        return super()._sample(study, trial, search_space)

    def _compute_acquisition_func(self, samples, mpe_below, mpe_above):
        return self.acquisition(super()._compute_acquisition_func(samples, mpe_below, mpe_above), samples)


class _ObservedStudy:
    """A study as TPE reads it (`_get_trials`): only the trials `observed` keeps."""

    def __init__(self, study: optuna.Study, observed):
        self._study, self._observed = study, observed

    def __getattr__(self, name):
        return getattr(self._study, name)

    def _get_trials(self, *args, **kwargs):
        return self._observed(self._study._get_trials(*args, **kwargs))


def _hooked_grpc_storage_proxy():
    """Optuna's GrpcStorageProxy with two hooks over its private setup and cache:
    `make_channel(host, port)` gives its channel, and `read_again(study_id, cached)` says
    whether the study's trials are read from the server now (cached: some are held)."""
    from optuna.storages import GrpcStorageProxy

    client_cache, stub = __getattr__("GrpcClientCache"), __getattr__("StorageServiceStub")

    class Cache(client_cache):
        def __init__(self, grpc_stub, proxy):
            super().__init__(grpc_stub)
            self._proxy = proxy

        def _read_trials_from_remote_storage(self, study_id: int) -> None:
            if self._proxy.read_again(study_id, study_id in self.studies):
                super()._read_trials_from_remote_storage(study_id)

    class HookedGrpcStorageProxy(GrpcStorageProxy):
        def make_channel(self, host: str, port: int):
            raise NotImplementedError

        def read_again(self, study_id: int, cached: bool) -> bool:
            return True

        def _setup(self) -> None:
            self._channel = self.make_channel(self._host, self._port)
            self._stub = stub(self._channel)
            self._cache = Cache(self._stub, self)

    return HookedGrpcStorageProxy
