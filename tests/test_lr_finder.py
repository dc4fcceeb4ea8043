"""The learning-rate range test: it trains, reads a smoothed curve on a log
axis, stops on divergence and gives the model back untouched."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tunefleet

from search.spec import StudySpec
from workers.lr_finder import cycle, range_test, suggest_lr


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-6 + 5 * i / 99) for i in range(100)]  # 1e-6 .. 1e-1
    # flat, then a descent steepest at 1e-3, a minimum near 1e-2, then divergence
    losses = [4.0 - 1.5 / (1 + math.exp(-4 * (math.log10(lr) + 3))) + (3.0 if lr > 2e-2 else 0.0) for lr in lrs]
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3, rel=0.3)


def test_range_test_trains_stops_on_divergence_and_restores_the_model(tiny):
    from workers.train import TrialData, build_model

    model_dir, dataset = map(str, tiny)
    spec = StudySpec(model=model_dir, dataset=dataset, method="full", n_examples=700, seq_len=48)
    data = TrialData(spec)
    model = build_model(spec, {})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = range_test(model, cycle(data.train, data.collator, 8), min_lr=1e-5, max_lr=10.0, steps=60)
    assert result.stopped_early, "full fine-tuning at a learning rate of 10 diverges"
    assert max(result.losses) > 1.4 * min(result.losses), "the weights moved: the loss responded to the rate"
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-5)
    assert 1e-5 <= result.suggestion <= result.lrs[-1]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model is restored"


def test_lr_find_command_and_lr_from_finder(tiny, tmp_path):
    model, dataset = tiny
    out = tmp_path / "lr.png"
    found = tunefleet("lr-find", "--model", model, "--dataset", dataset, "--method", "lora", "--steps", 30,
                      "--seq-len", 48, "--out", out, "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    assert 1e-7 <= report["suggestion"] <= 1.0 and len(report["lrs"]) == len(report["smoothed_losses"]) > 3
    assert out.read_bytes()[:4] == b"\x89PNG"
    created = tunefleet("study", "create", "found", "--model", model, "--dataset", dataset, "--method", "lora",
                        "--seq-len", 48, "--lr-from-finder", "--json", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    centre = json.loads(created.stdout)["spec"]["space_overrides"]["learning_rate"]["centre"]
    assert f"suggests {centre:.2e}" in created.stderr
