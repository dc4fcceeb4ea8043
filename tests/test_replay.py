"""The replay benchmark (bench/search_replay): a replayed study makes the real study's decisions
on the same recorded configurations; the table's surrogate and the statistics; the harness
end to end on the committed tables."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from bench.search_replay import stats
from bench.search_replay.fleet import TunefleetSearch, replay
from bench.search_replay.record import record
from bench.search_replay.table import Table
from search import attrs, progress
from search.claim import claim
from search.spec import Detectors, StudySpec
from search.study import create, load, space_of
from spaces.space import suggest
from storage import backend, open_storage
from workers.train import Resident
from workers.trial_outcome import report
from workers.trial_run import train

QUIET = Detectors(divergence_ratio=1e30, divergence_rise=1e30, divergence_patience=10**9,
                  plateau_window=10**9, plateau_min_improvement=0.0)
ROOT = Path(__file__).resolve().parents[1]


def _spec(tiny, **options):
    model, dataset = map(str, tiny)
    return StudySpec(model=model, dataset=dataset, method="lora", n_examples=700, max_steps=12, eval_steps=3,
                     seq_len=48, detectors=QUIET, queue_starting_configs=False, n_trials=6, eta=2,
                     min_fraction=0.25, brackets=1, space_overrides={"batch_size": {"choices": [4, 8]},
                                                        "learning_rate": {"low": 1e-5, "high": 0.1}}, **options)


CONFIGS = [{"learning_rate": lr, "batch_size": b, "lr_scheduler_type": s, "warmup_ratio": 0.0, "weight_decay": 0.0,
            "max_grad_norm": 1.0, "lora_r": 8, "lora_alpha_ratio": 2, "lora_dropout": 0.0}
           for lr, b, s in ((3e-3, 4, "cosine"), (1e-4, 8, "linear"), (2e-2, 4, "constant_with_warmup"),
                            (6e-4, 8, "cosine"), (3e-5, 4, "linear"), (8e-3, 8, "cosine"))]


def _decisions(study) -> list[tuple]:
    out = []
    for t in study.get_trials(deepcopy=False):
        paused = t.user_attrs.get(attrs.PAUSED)
        out.append((t.number, t.params["learning_rate"], t.state.name, paused and paused["rung"],
                    t.user_attrs.get(attrs.PROMOTED_FROM)))
    return out


def _study(storage, spec, seed=1):
    create(storage, "replayed", spec)
    study, spec = load(storage, "replayed", seed=seed)
    for config in CONFIGS:
        study.enqueue_trial(config)
    return study, spec


def test_a_replayed_study_makes_the_real_studys_asha_and_promotion_decisions(tiny, tmp_path):
    spec = _spec(tiny)
    # The real study: one worker trains every trial, promotions resume from checkpoints.
    url = f"journal:{tmp_path / 'j.log'}"
    storage = open_storage(url)
    study, spec = _study(storage, spec)
    store, warm = backend(url).artifacts(storage), Resident(spec)
    while (trial := claim(study, storage, backend(url), spec)) is not None:
        params = suggest(trial, space_of(spec))
        report(study, trial, params, train(trial, params, spec, warm, store, tmp_path / "w", lambda: False), store)
    real = _decisions(study)

    # The table: each configuration trained once in full, evaluated where the study evaluates.
    runs = [record(spec, warm, f"c{i}", c, sorted(progress.eval_points(spec, progress.trial_steps(spec, c["batch_size"]))))
            for i, c in enumerate(CONFIGS)]
    table = Table(runs, space_of(spec))
    memory = optuna.storages.InMemoryStorage()
    replayed_study, spec = _study(memory, spec)
    history = replay(TunefleetSearch(replayed_study, memory, spec, table), workers=1)

    assert [d for d in real if d[4] is not None], "eta 2 over 6 configurations promotes"
    assert [d for d in real if d[3] is not None], "and pauses"
    assert _decisions(replayed_study) == real
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for t in replayed_study.get_trials(deepcopy=False):
        for key, value in t.intermediate_values.items():  # a promotion continues as the whole run did
            assert math.isclose(by_number[t.number].intermediate_values[key], value, rel_tol=1e-3)
    assert len(history.ended) == len(real)
    tokens = {t.number: t.user_attrs[attrs.COST]["tokens"] for t in study.get_trials(deepcopy=False)}
    assert {e.trial: e.tokens for e in history.ended} == tokens, "a promotion pays only for what it trains"


def test_every_rung_is_reported_on_a_step_of_its_own_and_keys_only_grow():
    for n_examples, min_fraction in ((1000, 1 / 9), (2000, 1 / 9), (700, 1 / 27)):
        spec = StudySpec(model="m", dataset="d", method="lora", n_examples=n_examples, epochs=1,
                         min_fraction=min_fraction)
        rungs = progress.rung_keys(spec)
        for total in range(1, 120):
            points = progress.eval_points(spec, total)
            reported = [k for step in sorted(points) for k in points[step]]
            # asha judges a trial at the highest key it has reported: keys must only grow
            assert reported == sorted(set(reported)) and set(rungs) <= set(reported), (total, points)
            if total >= len(rungs):  # room for each rung below the end on a judged step of its own
                steps = [s for s, keys in points.items() for k in keys if k in rungs[:-1]]
                assert len(set(steps)) == len(steps) and max(steps) < total, (total, points)
            assert all(k in rungs for keys in points.values() for k in keys[:-1]), "one other key per step"
    five = progress.eval_points(StudySpec(model="m", dataset="d", method="lora", n_examples=2000, epochs=1,
                                          max_eval_examples=200), 5)
    assert {200, 600} <= {k for keys in five.values() for k in keys}, "the issue's 5-step trial"


def test_a_five_step_trial_is_judged_at_each_rung(tmp_path):
    """Real studies, replayed trials of five steps: asha pauses one at the rung at 1/3 (key 600),
    which a 5-step trial never reported before the fix."""
    spec = StudySpec(model="m", dataset="d", method="lora", n_examples=2000, epochs=1, brackets=1,
                     n_trials=3, queue_starting_configs=False, detectors=QUIET, lease_seconds=1e9,
                     space_overrides={"batch_size": {"value": 360}, "learning_rate": {"low": 1e-5, "high": 0.1}})
    assert progress.trial_steps(spec, 360) == 5
    space = space_of(spec)
    configs = [{name: p.centre if p.choices else p.low for name, p in space.items()} for _ in range(3)]
    runs = []
    for i, (config, start) in enumerate(zip(configs, (4.0, 3.5, 4.5))):
        config["learning_rate"] = 10 ** (-4 + i / 2)
        losses = [start - 0.1 * s for s in range(5)]
        runs.append({"id": f"c{i}", "seed": 0, "params": config, "steps": 5, "loss": losses, "grad_norm": [1.0] * 5,
                     "tokens": [100 * s for s in range(1, 6)], "eval": [[s + 1, v] for s, v in enumerate(losses)],
                     "seconds": 1.0})
    storage = optuna.storages.InMemoryStorage()
    create(storage, "short", spec)
    study, spec = load(storage, "short", seed=0)
    for config in configs:
        study.enqueue_trial(config)
    replay(TunefleetSearch(study, storage, spec, Table(runs, space)), workers=1)
    trials = study.get_trials(deepcopy=False)
    assert [t.user_attrs[attrs.PAUSED] for t in trials[:3]] == [{"rung": 200, "step": 1}] * 3, \
        "eta 3: none of the first three is in the best third of the rung at 1/9 until all three reached it"
    promoted = trials[3]  # the best of them, continued from step 1, then judged at 1/3 (step 2), alone there
    assert promoted.user_attrs[attrs.PROMOTED_FROM] == 1
    assert promoted.user_attrs[attrs.PAUSED] == {"rung": 600, "step": 2}, "judged at 1/3 of its five steps"


def test_a_paused_configuration_and_its_promotion_are_one_observation_for_the_sampler():
    from search.prior_sampler import PriorGuidedSampler
    from search.tpe import ConfigurationTPESampler
    from spaces.param import Param

    study = optuna.create_study()
    x = optuna.distributions.FloatDistribution(0, 1)
    paused = study.ask({"x": x})
    paused.report(0.5, 1)
    paused.set_user_attr(attrs.PAUSED, {"rung": 1, "step": 1})
    study.tell(paused, state=TrialState.PRUNED)
    study.enqueue_trial({"x": paused.params["x"]}, user_attrs={attrs.PROMOTED_FROM: 0, attrs.LINEAGE: 0})
    promoted = study.ask({"x": x})
    other = study.ask({"x": x})
    study.tell(promoted, 0.2)
    seen = ConfigurationTPESampler().observed(study.get_trials(deepcopy=False,
                                                               states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))
    assert [t.number for t in seen] == [promoted.number, other.number]
    sampler = PriorGuidedSampler({"x": Param("x", 0.0, 1.0, centre=0.5)})
    assert sampler._finished(study) == 1, "piBO's evidence count n counts configurations"


def test_the_table_replays_a_recorded_run_and_its_nearest_neighbour():
    from spaces.param import Param

    space = {"learning_rate": Param("learning_rate", 1e-5, 1e-1, log=True), "batch_size": Param("batch_size", choices=(4, 8)),
             "lr_scheduler_type": Param("lr_scheduler_type", choices=("cosine", "linear"))}
    runs = []
    for i, lr in enumerate(np.geomspace(1e-5, 1e-1, 24)):
        loss = [4 - 0.1 * i, 3.9 - 0.1 * i]
        runs.append({"id": f"r{i}", "seed": 0, "params": {"learning_rate": float(lr), "batch_size": 4 + 4 * (i % 2),
                                                           "lr_scheduler_type": "cosine"},
                     "steps": 2, "loss": loss, "grad_norm": [1, 1], "tokens": [10, 20], "eval": [[2, loss[1]]],
                     "seconds": 1.0})
    table = Table(runs, space)
    assert table.lookup(runs[3]["params"]).id == "r3"
    near = {**runs[7]["params"], "learning_rate": runs[7]["params"]["learning_rate"] * 1.05}
    blended = table.lookup(near)  # the k nearest of its batch, weighted by 1/distance^2, step by step
    ids = blended.id.removeprefix("mean of ").split(", ")
    assert ids[0] == "r7" and len(ids) == table.k and blended.params == near
    plain = np.mean([runs[int(i[1:])]["loss"] for i in ids], axis=0)
    assert all(abs(b - r) < abs(m - r) for b, m, r in zip(blended.loss, plain, runs[7]["loss"])), \
        "nearer the nearest run than the plain mean"
    closer = table.lookup({**near, "learning_rate": runs[7]["params"]["learning_rate"] * 1.0001})
    assert closer.loss == pytest.approx(runs[7]["loss"], abs=1e-4), "continuous at a recorded run"
    assert blended.tokens == runs[7]["tokens"]
    assert table.fidelity(folds=3)["surrogate_spearman"] > 0.8, "a loss monotone in the learning rate ranks"


def test_regret_speedup_and_wilcoxon():
    budget = 100.0
    good = {0: [(10, 1.0)], 1: [(20, 1.0)], 2: [(10, 1.5), (30, 1.0)]}
    slow = {0: [(50, 1.2), (90, 1.0)], 1: [(60, 1.1)], 2: [(80, 1.3)]}
    s = stats.summarise({"fast": good, "slow": slow}, budget, "fast", "slow")
    assert s["best"] == 1.0 and s["worst"] == 1.5
    fast, baseline = s["methods"]["fast"], s["methods"]["slow"]
    assert fast["final_regret"][0] == 0.0 and baseline["regret_auc"][0] > fast["regret_auc"][0]
    assert fast["speedup"]["exact"] and fast["speedup"]["value"] > 2.5
    never, exact = stats.speedup(np.full(stats.GRID, 2.0), np.linspace(2, 1, stats.GRID), budget)
    assert not exact and never == 1.0, "never reached: the baseline's tokens over the budget, a bound"
    assert stats.wilcoxon_p(dict.fromkeys(range(5), 0.0), dict.fromkeys(range(5), 0.0)) == 1.0
    assert stats.wilcoxon_p(dict.fromkeys(range(20), 0.0), dict.fromkeys(range(20), 1.0)) < 0.001
    assert stats.wilcoxon_p({s: float(s) for s in range(20)}, {s: float(s) for s in range(1, 21)}) == 1.0, \
        "paired by seed (1..19 agree), not by position"


def test_the_replay_harness_runs_on_the_committed_tables(tmp_path):
    out = tmp_path / "replay"
    result = subprocess.run([sys.executable, "-m", "bench.search_replay.run", "--preset", "smoke", "--out", str(out),
                             "--problems", "docstrings-lora", "--jobs", "1"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "report.json").read_text())
    assert data["seeds"] == 3
    problem = data["problems"]["docstrings-lora"]
    for name in ("speedup_vs_tpe_median", "regret_auc", "final_regret", "wilcoxon_p"):
        assert set(problem[name]) >= ({"tpe-median"} if name == "wilcoxon_p" else {"tunefleet", "tpe-median"})
    assert problem["speedup_vs_tpe_median"]["tpe-median"] == 1.0
    assert 0 <= problem["surrogate_spearman"] <= 1
    assert (out / "report.md").is_file() and (out / "regret-docstrings-lora.png").is_file()
