"""Detectors on synthetic curves, including the seeds' own failure cases."""

from __future__ import annotations

import math

import pytest

from workers.detectors import (DivergenceDetector, GradientExplosionDetector, GradientVanishingDetector,
                               OverfittingDetector, PlateauDetector)


def first_verdict(detector, values):
    for step, value in enumerate(values, 1):
        verdict = detector.update(step, value)
        if verdict:
            return verdict
    return None


def test_non_finite_loss_diverges_at_once():
    for bad in (math.nan, math.inf):
        verdict = first_verdict(DivergenceDetector(), [3.0, 2.9, bad, 2.5])
        assert verdict.detector == "divergence" and verdict.step == 3
        assert verdict.evidence["rule"] == "non-finite loss"


def test_loss_above_a_multiple_of_its_first_value_diverges():
    verdict = first_verdict(DivergenceDetector(ratio=2.0), [3.0, 4.0, 5.5, 6.5])
    assert verdict.step == 4 and verdict.evidence["first_loss"] == 3.0


def test_a_single_spike_is_not_divergence():
    losses = [3.0 - 0.01 * i for i in range(30)]
    losses[10] = 5.5  # one bad batch
    assert first_verdict(DivergenceDetector(), losses) is None


def test_sustained_rise_diverges_at_any_scale():
    for scale in (1.0, 0.001):
        curve = [scale * v for v in [3.0, 2.5, 2.0, 1.8] + [1.8 + 0.15 * i for i in range(1, 20)]]
        verdict = first_verdict(DivergenceDetector(), curve)
        assert verdict is not None and "above its minimum" in verdict.evidence["rule"], scale


def test_decreasing_noisy_loss_is_not_divergence():
    losses = [3.0 * 0.97 ** i * (1.08 if i % 2 else 0.94) for i in range(60)]
    assert first_verdict(DivergenceDetector(), losses) is None


def test_tiny_scale_loss_can_plateau():
    # The seed's absolute 0.001 rule calls this curve converging; relative to its scale it is flat.
    curve = [0.0010, 0.00099, 0.000989, 0.000989, 0.000988, 0.000988]
    verdict = first_verdict(PlateauDetector(window=3, min_improvement=0.005), curve)
    assert verdict is not None and verdict.detector == "plateau" and verdict.step == 5


def test_steadily_improving_loss_is_no_plateau():
    curve = [3.0 * 0.95 ** i for i in range(20)]
    assert first_verdict(PlateauDetector(window=3, min_improvement=0.005), curve) is None


def test_plateau_needs_more_evaluations_than_its_window():
    assert first_verdict(PlateauDetector(window=3), [2.0, 2.0, 2.0]) is None


def test_a_single_gradient_spike_is_not_an_explosion():
    norms = [1.0, 1.2, 0.9, 1.1, 1.0, 50.0, 1.0, 1.1, 0.9, 1.0]
    assert first_verdict(GradientExplosionDetector(), norms) is None


def test_sustained_gradient_blowup_is_an_explosion():
    norms = [1.0, 1.2, 0.9, 1.1, 1.0, 30.0, 45.0, 80.0, 200.0]
    verdict = first_verdict(GradientExplosionDetector(ratio=10, patience=3), norms)
    assert verdict.detector == "gradient_explosion" and verdict.step == 8 and verdict.evidence["median"] == 1.0
    assert first_verdict(GradientExplosionDetector(), [1.0, math.inf]).evidence["rule"] == "non-finite gradient norm"


def test_small_but_steady_gradients_do_not_vanish():
    # 0.0005 everywhere: the seed's absolute 0.001 rule calls this vanishing; relative to itself it is fine.
    assert first_verdict(GradientVanishingDetector(), [0.0005] * 30) is None


def test_gradients_collapsing_to_nothing_vanish():
    norms = [2.0] * 5 + [1e-5] * 6
    verdict = first_verdict(GradientVanishingDetector(ratio=1e-3, patience=5), norms)
    assert verdict.detector == "gradient_vanishing" and verdict.step == 10


def _overfit_run(pairs, **kw):
    detector = OverfittingDetector(**kw)
    for step, (train_losses, eval_loss) in enumerate(pairs, 1):
        for loss in train_losses:
            detector.add_train_loss(loss)
        verdict = detector.update(step, eval_loss)
        if verdict:
            return verdict
    return None


def test_overfitting_needs_both_the_ratio_and_the_gap():
    assert _overfit_run([([0.01], 0.02)] * 5) is None, "ratio 2 but a negligible gap near zero loss"
    assert _overfit_run([([3.00], 3.11)] * 5) is None, "gap 0.11 but ratio 1.04 at a high loss"
    verdict = _overfit_run([([1.0], 1.1), ([0.5], 0.9), ([0.3], 1.0)])
    assert verdict.detector == "overfitting" and verdict.step == 3 and verdict.evidence["train_loss"] == 0.3


def test_overfitting_uses_the_train_losses_since_the_last_evaluation():
    # Mean of 0.4 and 0.2 is 0.3: eval 0.6 is 2x and 0.3 above it, at two evaluations in a row.
    verdict = _overfit_run([([0.4, 0.2], 0.6), ([0.4, 0.2], 0.6)])
    assert verdict is not None and verdict.evidence["train_loss"] == pytest.approx(0.3)
