"""Training-issue detectors: plain Python over number sequences, no torch import.

Each detector takes one observation at a time through `update(step, value)` and
returns a Verdict once its rule fires, else None.
"""

from workers.detectors.divergence import DivergenceDetector
from workers.detectors.plateau import PlateauDetector
from workers.detectors.verdict import Verdict

__all__ = ["DivergenceDetector", "PlateauDetector", "Verdict"]
