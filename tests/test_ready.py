"""The coordinator's ready queue (search/ready.py) on a real Optuna storage: sizing
by demand within the budget, one taker per trial, nothing handed out once stopped."""

from __future__ import annotations

import threading

import optuna
from optuna.trial import TrialState

from search import attrs, ready
from search.spec import StudySpec
from storage import optuna_compat as compat


def _study(n_trials: int) -> tuple[optuna.Study, StudySpec]:
    spec = StudySpec(model="tiny", dataset="data.jsonl", method="lora", n_examples=1000, n_params=1_000_000,
                     hidden_size=64, sampler="random", queue_starting_configs=False, n_trials=n_trials)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.set_user_attr(attrs.SPEC, spec.to_dict())
    return study, spec


def test_queues_the_minimum_then_follows_the_workers_that_asked_in_vain():
    study, spec = _study(100)
    queue = ready.Queue()
    assert ready.top_up(study, spec, 10, queue) == ready.MIN_READY
    taken = [queue.take(compat.storage_of(study), compat.study_id(study)) for _ in range(ready.MIN_READY)]
    assert len(set(taken)) == ready.MIN_READY and None not in taken
    assert all(compat.storage_of(study).get_trial(i).state == TrialState.RUNNING for i in taken)
    for _ in range(30):  # thirty workers found nothing
        assert queue.take(compat.storage_of(study), compat.study_id(study)) is None
    assert queue.misses(compat.study_id(study)) == 30
    assert ready.top_up(study, spec, 10, queue) == 30
    assert queue.misses(compat.study_id(study)) == 0 and queue.open(compat.study_id(study))


def test_never_queues_past_the_budget_and_closes_when_spent():
    study, spec = _study(5)
    queue = ready.Queue()
    for _ in range(50):
        queue.take(compat.storage_of(study), compat.study_id(study))
    assert ready.top_up(study, spec, 10, queue) == 5
    ids = [queue.take(compat.storage_of(study), compat.study_id(study)) for _ in range(5)]
    for trial_id in ids:
        compat.storage_of(study).set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    assert ready.top_up(study, spec, 10, queue) == 0
    assert queue.take(compat.storage_of(study), compat.study_id(study)) is None and not queue.open(compat.study_id(study))
    assert len(study.trials) == 5


def test_a_stopped_study_hands_out_nothing_though_trials_wait():
    study, spec = _study(100)
    queue = ready.Queue()
    ready.top_up(study, spec, 10, queue)
    study.set_user_attr(attrs.STOP, "stopped by request")
    assert ready.top_up(study, spec, 10, queue) == 0
    assert queue.take(compat.storage_of(study), compat.study_id(study)) is None and not queue.open(compat.study_id(study))
    assert len(study.get_trials(states=(TrialState.WAITING,))) == ready.MIN_READY, "kept for a resume"


def test_each_trial_goes_to_one_taker_and_one_taken_elsewhere_is_skipped():
    study, spec = _study(1000)
    queue = ready.Queue()
    for _ in range(200):
        queue.take(compat.storage_of(study), compat.study_id(study))
    ready.top_up(study, spec, 10, queue)
    first = study.get_trials(states=(TrialState.WAITING,))[0]
    compat.storage_of(study).set_trial_state_values(compat.trial_id(first), TrialState.RUNNING)  # a worker with its own connection
    got, lock = [], threading.Lock()

    def worker():
        while (trial_id := queue.take(compat.storage_of(study), compat.study_id(study))) is not None:
            with lock:
                got.append(trial_id)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 199 and compat.trial_id(first) not in got
    assert queue.open(compat.study_id(study)), "the budget has room: more may come"
