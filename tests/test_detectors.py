"""Detectors on synthetic curves, including the seeds' own failure cases."""

from __future__ import annotations

import math

from workers.detectors import DivergenceDetector, PlateauDetector


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
