"""Creating and loading tunefleet studies: the spec stored in the study, the seeds queued first."""

from __future__ import annotations

import time

import optuna

from search import attrs, progress
from search.spec import StudySpec
from spaces.errors import InputError
from spaces.space import build_space


def space_of(spec: StudySpec):
    return build_space(spec.method, spec.n_params, spec.n_examples, spec.space_overrides, spec.hidden_size,
                       spec.epochs or None)


# The first trial's source: the prior's mode, run in full (search/asha.py deals it to the bracket
# that runs in full), so the best guess is known early and PriorBand's evidence starts from it.
STARTING_CONFIG = "the prior's mode (starting config)"


def build_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The spec's sampler. Workers pass no seed: sharing one, they would propose the same points."""
    if spec.sampler == "prior":
        from search.priorband import PriorBandSampler

        return PriorBandSampler(space_of(spec), spec, seed=seed)
    if spec.sampler == "pibo":
        from search.prior_sampler import PriorGuidedSampler

        return PriorGuidedSampler(space_of(spec), seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=4)
    from search.tpe import ConfigurationTPESampler

    return ConfigurationTPESampler(seed=seed)


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The cross-trial pruner, on the keys trials report under (search/progress.py)."""
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "asha":
        from search.asha import AshaPruner

        return AshaPruner(spec)
    first = progress.key(spec, progress.eval_fractions(spec)[0])
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=progress.resource(spec))
    # Not at the first evaluation: every curve drops steeply at the start.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first + 1)


def create(storage, name: str, spec: StudySpec, resume: bool = False) -> optuna.Study:
    """A new study holding the spec, with the prior's mode queued first.

    With resume, an existing study is reopened as it is (its stored spec wins)
    and only its trial budget is raised to the spec's n_trials.
    """
    if name in optuna.get_all_study_names(storage):
        if not resume:
            raise InputError(f"study '{name}' already exists (add --resume to continue it)")
        study, stored = load(storage, name)
        if spec.n_trials > stored.n_trials:
            stored.n_trials = spec.n_trials
            study.set_user_attr(attrs.SPEC, stored.to_dict())
        if attrs.STOP in study.user_attrs:  # continuing a stopped study starts it again
            study.set_user_attr(attrs.STOP, None)
        return study
    study = optuna.create_study(
        study_name=name, storage=storage, direction="minimize",
        sampler=build_sampler(spec), pruner=build_pruner(spec),
    )
    study.set_user_attr(attrs.SPEC, spec.to_dict())
    study.set_user_attr(attrs.CREATED, time.time())
    if spec.queue_starting_configs and spec.n_trials:
        from search.prior import Prior

        study.enqueue_trial(Prior(space_of(spec)).mode(), user_attrs={attrs.SOURCE: STARTING_CONFIG})
    return study


def load(storage, name: str, seed: int | None = None) -> tuple[optuna.Study, StudySpec]:
    """The study and its spec, with the sampler and pruner the spec names
    (seeded only for single-process runs such as the benchmarks)."""
    try:
        study_attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        raise InputError(f"no study named '{name}' (list them with: tunefleet studies)") from None
    if attrs.SPEC not in study_attrs:
        raise InputError(f"study '{name}' was not created by tunefleet (it has no study spec)")
    spec = StudySpec.from_dict(study_attrs[attrs.SPEC])
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=build_sampler(spec, seed), pruner=build_pruner(spec))
    return study, spec


def delete(storage, artifact_store, name: str, attempts: int = 20) -> int:
    """Deletes the study and its trials' artifacts (checkpoints, curves); returns how many
    artifacts went. The study is stopped first so that no worker starts a trial in it, and
    deleted again until it is gone: a worker writing to it meanwhile can leave it standing."""
    from optuna.artifacts import get_all_artifact_meta
    from optuna.artifacts.exceptions import ArtifactNotFound

    from search.budget import stop

    study, _ = load(storage, name)
    stop(study, "being deleted")
    artifacts = set()
    for t in study.get_trials(deepcopy=False):
        artifacts |= {p["artifact"] for p in (t.system_attrs.get(attrs.CHECKPOINT),
                                              t.system_attrs.get(attrs.BEST_CHECKPOINT)) if p}
        artifacts |= {m.artifact_id for m in get_all_artifact_meta(t, storage=storage)}
    for artifact in artifacts:
        try:
            artifact_store.remove(artifact)
        except ArtifactNotFound:
            pass
    for attempt in range(attempts):
        if name not in optuna.get_all_study_names(storage):
            return len(artifacts)
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:  # gone in the meantime
            pass
        except Exception:  # a worker's write raced the delete: try again
            time.sleep(0.2 * (attempt + 1))
    raise InputError(f"study '{name}' could not be deleted: workers keep writing to it (stop them first)")
