"""Training-issue detectors: plain Python over number sequences, no torch import.

Each detector takes one observation at a time through `update(step, value)` and
returns a Verdict once its rule fires, else None.
"""

from workers.detectors.divergence import DivergenceDetector
from workers.detectors.gradient_explosion import GradientExplosionDetector
from workers.detectors.gradient_vanishing import GradientVanishingDetector
from workers.detectors.overfitting import OverfittingDetector
from workers.detectors.plateau import PlateauDetector
from workers.detectors.verdict import Verdict

__all__ = ["DivergenceDetector", "GradientExplosionDetector", "GradientVanishingDetector",
           "OverfittingDetector", "PlateauDetector", "Verdict"]
