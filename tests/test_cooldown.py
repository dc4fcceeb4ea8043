"""Warmup-stable-decay trials evaluate on a cooled-down branch of the run, and the run goes on
exactly as if the branch had never been (workers/cooldown.py)."""

from __future__ import annotations

import optuna
import pytest

from search.spec import Detectors, StudySpec
from spaces.export import training_arguments
from workers.cooldown import CooldownBranch, cooldown_rate
from workers.train import Resident
from workers.trial_run import train

PARAMS = {"learning_rate": 3e-3, "batch_size": 4, "lr_scheduler_type": "warmup_stable_decay", "warmup_ratio": 0.1,
          "weight_decay": 0.01, "max_grad_norm": 1.0, "lora_r": 8, "lora_alpha_ratio": 2, "lora_dropout": 0.05}
QUIET = {"divergence_ratio": 1e9, "divergence_rise": 1e9, "plateau_window": 1000, "overfit_ratio": 1e9}


def _run(tiny, tmp_path):
    model, dataset = map(str, tiny)
    spec = StudySpec(model=model, dataset=dataset, method="lora", n_examples=700, seq_len=48, pruner="none",
                     max_steps=30, eval_steps=10, detectors=Detectors(**QUIET))
    trial = optuna.create_study().ask()
    for name, value in PARAMS.items():
        trial.suggest_categorical(name, [value])
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    run = train(trial, PARAMS, spec, Resident(spec), store, tmp_path, should_stop=lambda: False)
    losses = [e["loss"] for e in run.log_history if "loss" in e]
    return losses, run.callback.eval_losses, run.cost["tokens"]


def test_the_branch_is_evaluated_and_discarded(tiny, tmp_path, monkeypatch):
    branched = _run(tiny, tmp_path / "a")
    monkeypatch.setattr(CooldownBranch, "on_step_end", lambda *args, **kwargs: None)  # no branch
    plain = _run(tiny, tmp_path / "b")
    assert len(branched[0]) == len(plain[0]) == 30
    # The run itself, every step after each branch included, is the uninterrupted run's.
    assert branched[0] == plain[0]
    assert branched[1][30] == plain[1][30], "the end, evaluated on the run itself"
    # The evaluations before the end are of the cooled-down branches, lower than the run's there.
    for step in (10, 20):
        assert branched[1][step] < plain[1][step], (step, branched[1], plain[1])
    assert branched[2] > plain[2], "the branches' tokens are counted"


def test_the_cooldown_falls_as_one_minus_sqrt_to_zero_and_the_export_decays_the_same_way():
    rates = [cooldown_rate(1.0, i, 4) for i in range(4)]
    assert rates == pytest.approx([0.5, 1 - 0.5 ** 0.5, 1 - 0.75 ** 0.5, 0.0])
    args = training_arguments({**PARAMS, "batch_size": 8}, "lora", 100, 10, 8, 0)
    assert args["lr_scheduler_kwargs"] == {"num_decay_steps": 20, "decay_type": "1-sqrt"}
