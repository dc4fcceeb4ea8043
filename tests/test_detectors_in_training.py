"""The overfitting and gradient detectors fire in real training of the tiny Llama,
not only on synthetic curves. Each test turns off the detectors that would
(rightly) end the run first, so the one under test is what ends it."""

from __future__ import annotations


import optuna

from search.spec import Detectors, StudySpec
from workers.train import Resident
from workers.trial_run import train

BASE = {"lr_scheduler_type": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0}
QUIET = {"divergence_ratio": 1e9, "divergence_rise": 1e9, "plateau_window": 1000, "overfit_ratio": 1e9}


def _run(tiny, tmp_path, params, detectors, n_lines=None, **spec):
    model, dataset = map(str, tiny)
    if n_lines:  # a small dataset to memorise
        lines = open(dataset).read().splitlines()[:n_lines]
        dataset = tmp_path / "small.jsonl"
        dataset.write_text("\n".join(lines) + "\n")
    spec = StudySpec(model=model, dataset=str(dataset), method="full", n_examples=n_lines or 700, seq_len=48,
                     pruner="none", detectors=Detectors(**detectors), **spec)
    params = {**BASE, **params}
    trial = optuna.create_study().ask()
    for name, value in params.items():
        trial.suggest_categorical(name, [value])
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    return train(trial, params, spec, Resident(spec), store, tmp_path, should_stop=lambda: False)


def test_overfitting_on_twenty_memorised_examples(tiny, tmp_path):
    run = _run(tiny, tmp_path, {"learning_rate": 3e-3, "batch_size": 4}, {"plateau_window": 1000}, n_lines=40,
               eval_fraction=0.5, max_steps=200, eval_steps=10)
    verdict = run.callback.verdict
    assert verdict is not None and verdict.detector == "overfitting", verdict
    e = verdict.evidence
    assert e["eval_loss"] > 1.5 * e["train_loss"] and e["eval_loss"] - e["train_loss"] > 0.1
    assert verdict.step < 200


def test_vanishing_gradients_once_one_example_is_memorised(tiny, tmp_path):
    run = _run(tiny, tmp_path, {"learning_rate": 1e-2, "batch_size": 1}, QUIET, n_lines=2,
               eval_fraction=0.5, max_steps=300, eval_steps=300)
    verdict = run.callback.verdict
    assert verdict is not None and verdict.detector == "gradient_vanishing", verdict
    assert verdict.evidence["grad_norm"] < 1e-3 * verdict.evidence["early_median"]
    assert verdict.step < 300


def test_gradient_explosion_as_the_learning_rate_ramps_to_ten(tiny, tmp_path):
    # The divergence detector is off: it would end this run long before (as it should).
    run = _run(tiny, tmp_path, {"learning_rate": 10.0, "batch_size": 4, "lr_scheduler_type": "constant_with_warmup",
                                "warmup_ratio": 1.0}, QUIET, max_steps=600, eval_steps=600)
    verdict = run.callback.verdict
    assert verdict is not None and verdict.detector == "gradient_explosion", verdict
    assert verdict.evidence["grad_norm"] > 10 * verdict.evidence["median"]
    norms = [e["grad_norm"] for e in run.log_history if "grad_norm" in e]
    assert len(norms) == verdict.step and min(norms[-3:]) > 10 * verdict.evidence["median"], "sustained, not a spike"
