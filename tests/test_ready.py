"""The coordinator's ready queue (search/ready.py) on a real Optuna storage: sizing
by demand within the budget, one taker per trial, nothing handed out once stopped."""

from __future__ import annotations

import threading

import optuna
from optuna.trial import TrialState

from search import attrs, ready
from search.spec import StudySpec


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
    taken = [queue.take(study._storage, study._study_id) for _ in range(ready.MIN_READY)]
    assert len(set(taken)) == ready.MIN_READY and None not in taken
    assert all(study._storage.get_trial(i).state == TrialState.RUNNING for i in taken)
    for _ in range(30):  # thirty workers found nothing
        assert queue.take(study._storage, study._study_id) is None
    assert queue.misses(study._study_id) == 30
    assert ready.top_up(study, spec, 10, queue) == 30
    assert queue.misses(study._study_id) == 0 and queue.open(study._study_id)


def test_never_queues_past_the_budget_and_closes_when_spent():
    study, spec = _study(5)
    queue = ready.Queue()
    for _ in range(50):
        queue.take(study._storage, study._study_id)
    assert ready.top_up(study, spec, 10, queue) == 5
    ids = [queue.take(study._storage, study._study_id) for _ in range(5)]
    for trial_id in ids:
        study._storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    assert ready.top_up(study, spec, 10, queue) == 0
    assert queue.take(study._storage, study._study_id) is None and not queue.open(study._study_id)
    assert len(study.trials) == 5


def test_a_stopped_study_hands_out_nothing_though_trials_wait():
    study, spec = _study(100)
    queue = ready.Queue()
    ready.top_up(study, spec, 10, queue)
    study.set_user_attr(attrs.STOP, "stopped by request")
    assert ready.top_up(study, spec, 10, queue) == 0
    assert queue.take(study._storage, study._study_id) is None and not queue.open(study._study_id)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == ready.MIN_READY, "kept for a resume"


def test_each_trial_goes_to_one_taker_and_one_taken_elsewhere_is_skipped():
    study, spec = _study(1000)
    queue = ready.Queue()
    for _ in range(200):
        queue.take(study._storage, study._study_id)
    ready.top_up(study, spec, 10, queue)
    first = study.get_trials(states=(TrialState.WAITING,))[0]
    study._storage.set_trial_state_values(first._trial_id, TrialState.RUNNING)  # a worker with its own connection
    got, lock = [], threading.Lock()

    def worker():
        while (trial_id := queue.take(study._storage, study._study_id)) is not None:
            with lock:
                got.append(trial_id)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == len(set(got)) == 199 and first._trial_id not in got
    assert queue.open(study._study_id), "the budget has room: more may come"
