"""Ending a trial and queuing its continuation are two writes: a process killed at any
point between them loses nothing and queues nothing twice (search/continuations.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search import attrs
from search.claim import claim
from search.spec import StudySpec
from search.study import create
from storage import backend

SPEC = StudySpec(model="/m", dataset="/d", method="lora", n_examples=100, n_params=int(1e8), n_trials=3,
                 lease_seconds=1)

# Claims a trial, then ends it to resume as a worker does, through a storage that kills the
# process (os._exit: no cleanup, its connection dropped) before its k-th write.
DIES_AT_WRITE_K = """
import os, sys
from search import continuations
from search.claim import claim
from search.study import load
from storage import backend, optuna_compat as compat

url, name, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
where = backend(url)
storage = where.open()
study, spec = load(storage, name)
trial = claim(study, storage, where, spec)

class DiesAtWrite:
    def __init__(self, inner):
        self.inner, self.writes = inner, 0
    def __getattr__(self, name):
        method = getattr(self.inner, name)
        if not name.startswith("set_"):
            return method
        def write(*args, **kwargs):
            if self.writes == k:
                os._exit(9)
            self.writes += 1
            return method(*args, **kwargs)
        return write

continuations.end_to_resume(DiesAtWrite(storage), compat.trial_id(trial), "interrupted", "killed")
os._exit(9)  # every write done: killed before anyone queued the continuation
"""


WRITES = 4  # end_to_resume: the mark, the error, the end time, the state


@pytest.mark.parametrize("killed_at", range(WRITES + 1))
def test_a_kill_between_the_two_writes_loses_no_trial(pg_url, killed_at):
    where = backend(pg_url)
    storage = where.open()
    create(storage, "s", SPEC)
    died = subprocess.run([sys.executable, "-c", DIES_AT_WRITE_K, pg_url, "s", str(killed_at)],
                          capture_output=True, text=True, timeout=120)
    assert died.returncode == 9, died.stderr
    study = optuna.load_study(study_name="s", storage=storage)
    (ended,) = study.get_trials()
    assert ended.state == (TrialState.FAIL if killed_at == WRITES else TrialState.RUNNING)
    if ended.state == TrialState.RUNNING:
        time.sleep(SPEC.lease_seconds + 0.5)  # killed before its end was written: its lease runs out
    continued = claim(study, storage, where, SPEC)
    assert continued.user_attrs[attrs.RESUME_OF] == ended.number
    assert continued.params == ended.params
    again = claim(study, storage, where, SPEC)  # the next claim queues nothing twice: a new configuration
    assert attrs.RESUME_OF not in again.user_attrs
    trials = study.get_trials()
    assert trials[ended.number].state == TrialState.FAIL
    assert [t.user_attrs.get(attrs.RESUME_OF) for t in trials].count(ended.number) == 1


def test_a_trial_never_leased_expires_on_the_collectors_clock(pg_url):
    """Its claimer died between taking and leasing it: the collector leases it on its own
    clock (Optuna's start time is in its writer's zone), and it expires a lease later."""
    from search import leases

    storage = backend(pg_url).open()
    study = create(storage, "s", SPEC)
    orphan = study.ask()  # RUNNING, never leased
    assert leases.requeue_expired(study, SPEC) == []
    assert study.get_trials()[orphan.number].system_attrs[attrs.LEASE]["holder"] == "nobody yet"
    time.sleep(SPEC.lease_seconds + 0.5)
    assert leases.requeue_expired(study, SPEC) == [
        f"trial {orphan.number} queued again to resume from its checkpoint (lease expired)"]
