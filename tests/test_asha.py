"""Multi-fidelity search: trials pause at rungs, the best are promoted and continue from their
checkpoint on another worker, no step is trained twice, and costs add up (real training)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from search import asha, attrs, budget
from search.spec import Detectors, StudySpec
from search.study import create, load, space_of
from spaces.space import suggest
from storage import backend, open_storage
from workers.train import Resident
from search.claim import claim
from workers.trial_outcome import report
from workers.trial_run import train

QUIET = Detectors(divergence_ratio=1e30, divergence_rise=1e30, divergence_patience=10**9,
                  plateau_window=10**9, plateau_min_improvement=0.0)


def _spec(tiny, **options):
    model, dataset = map(str, tiny)
    return StudySpec(model=model, dataset=dataset, method="lora", n_examples=700, max_steps=12, eval_steps=3,
                     seq_len=48, detectors=QUIET, space_overrides={"batch_size": {"choices": [4, 8]}}, **options)


def test_promotions_continue_from_the_checkpoint_on_another_worker(tiny, tmp_path):
    url = f"journal:{tmp_path / 'j.log'}"
    storage = open_storage(url)
    create(storage, "asha", _spec(tiny, n_trials=5, eta=2, min_fraction=0.25,  # rungs at steps 3, 6, 12
                                  brackets=1))
    study, spec = load(storage, "asha", seed=1)
    store = backend(url).artifacts(storage)
    workers, worker_of = [Resident(spec), Resident(spec)], {}
    while (trial := claim(study, storage, backend(url), spec)) is not None:
        parent = trial.user_attrs.get(attrs.PROMOTED_FROM)
        # A promotion goes to the other worker: only the artifact store carries the checkpoint over.
        w = 1 - worker_of[parent] if parent is not None else trial.number % 2
        worker_of[trial.number] = w
        params = suggest(trial, space_of(spec))
        run = train(trial, params, spec, workers[w], store, tmp_path / f"worker{w}", should_stop=lambda: False)
        report(study, trial, params, run, store)

    trials = {t.number: t for t in study.get_trials()}
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert budget.configurations(trials.values()) == 5
    promoted = [t for t in trials.values() if attrs.PROMOTED_FROM in t.user_attrs]
    assert promoted, "eta 2 over 5 configurations promotes at least one"
    for child in promoted:
        paused = trials[child.user_attrs[attrs.PROMOTED_FROM]]
        assert paused.state == TrialState.PRUNED and worker_of[paused.number] != worker_of[child.number]
        step = paused.user_attrs[attrs.PAUSED]["step"]
        assert child.user_attrs[attrs.BATCH]["started_at_step"] == step, "continued where it paused"
        assert child.params == paused.params
        for key, value in paused.intermediate_values.items():
            assert child.intermediate_values[key] == value
    assert [t for t in trials.values() if t.state == TrialState.COMPLETE]

    # No step trained twice: along each configuration, every trial starts where the one before stopped.
    by_lineage: dict[int, list] = {}
    for t in sorted(trials.values(), key=lambda t: t.number):
        by_lineage.setdefault(asha.lineage(t), []).append(t)
    for chain in by_lineage.values():
        for before, after in zip(chain, chain[1:]):
            assert after.user_attrs[attrs.BATCH]["started_at_step"] == before.user_attrs[attrs.PAUSED]["step"]

    # The promoted run is the run it would have been: a full uninterrupted trial of the same params
    # trains the same tokens and ends at the same eval loss.
    done = min((t for t in trials.values() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    chain = by_lineage[asha.lineage(done)]
    assert len(chain) > 1
    tokens = sum(t.user_attrs[attrs.COST]["tokens"] for t in chain)
    plain = optuna.create_study(direction="minimize")
    plain.enqueue_trial(done.params)
    once = plain.ask()
    solo_spec = _spec(tiny, pruner="none")
    run = train(once, suggest(once, space_of(solo_spec)), solo_spec, workers[0], store, tmp_path / "solo",
                should_stop=lambda: False)
    assert run.cost["tokens"] == tokens > 0
    assert math.isclose(run.callback.eval_losses[12], done.intermediate_values[12], rel_tol=1e-4)


def _frozen(number, values, lineage=None, state=TrialState.RUNNING):
    t = optuna.trial.create_trial(state=state, value=None if state != TrialState.COMPLETE else 1.0,
                                  params={}, distributions={}, intermediate_values=values,
                                  user_attrs={} if lineage is None else {attrs.LINEAGE: lineage})
    t.number = number
    return t


def test_brackets_deal_configurations_in_hyperbands_proportions_and_judge_them_apart(tiny):
    spec = _spec(tiny, n_trials=40)  # 12 steps, rungs 1/9, 1/3, 1 -> three brackets
    cycle = asha.bracket_cycle(spec)
    assert [cycle.count(b) for b in (0, 1, 2)] == [9, 5, 3]  # Hyperband's n_s for eta 3, s_max 2
    assert cycle[:3] == [2, 1, 0], "the first configuration (the starting config) runs in full"
    assert asha.bracket_cycle(_spec(tiny, brackets=1)) == [0, 0, 0]

    low, mid, end = asha.progress.rung_keys(spec)
    # Configurations 0..5 dealt to brackets 2, 1, 0, 0, 1, 0; trial 6 continues configuration 3.
    trials = [_frozen(n, {low: 5.0 - n}) for n in range(6)] + [_frozen(6, {low: 2.0}, lineage=3)]
    of = asha.brackets(trials, spec)
    assert of == {0: 2, 1: 1, 2: 0, 3: 0, 4: 1, 5: 0}
    assert not asha.judged(spec, 2, low) and not asha.judged(spec, 2, mid) and not asha.judged(spec, 0, end)
    assert not asha.judged(spec, 1, low) and asha.judged(spec, 1, mid) and asha.judged(spec, 0, low)
    # Bracket 0 holds configurations 2, 3, 5: configuration 5 (loss 0) is its best third, whatever
    # the better losses of other brackets.
    assert asha.peers(trials, spec, 5) == {2, 3, 5}
    values = asha.standing(trials, spec, 5, low, 0.0)
    assert asha.in_top(values, 5, spec.eta) and not asha.in_top(values, 2, spec.eta)
