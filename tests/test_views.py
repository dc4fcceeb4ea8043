"""The text views lay out the reports they are given: every number a report holds shows."""

from __future__ import annotations

import csv
import io

from search import views
from workers.detectors.plateau import PlateauDetector


def test_a_prune_reads_as_its_detector_worded_it():
    detector = PlateauDetector(window=2, min_improvement=0.01)
    verdict = next(v for step, loss in enumerate([2.0, 1.5, 1.499, 1.4985]) if (v := detector.update(step, loss)))
    line = views.describe_prune(verdict.to_dict())
    assert line.startswith(f"by plateau at step {verdict.step}: best loss improved by less than 1.0%")
    assert "(1.5000 -> 1.4985)" in line


def test_trials_as_csv_flatten_params_and_cost():
    rows = [{"number": 0, "state": "COMPLETE", "value": 1.25, "params": {"learning_rate": 1e-4},
             "cost": {"tokens": 900, "seconds": 2.5}, "ended": "complete"},
            {"number": 1, "state": "PRUNED", "value": None, "params": {"learning_rate": 3e-4, "lora_r": 8},
             "cost": {}, "ended": "pruned by plateau"}]
    parsed = list(csv.DictReader(io.StringIO(views.trials_csv(rows))))
    assert [r["params_learning_rate"] for r in parsed] == ["0.0001", "0.0003"]
    assert parsed[0]["params_lora_r"] == "" and parsed[1]["params_lora_r"] == "8"
    assert (parsed[0]["tokens"], parsed[1]["tokens"]) == ("900", "")
    text = views.trials(rows).splitlines()
    assert "1.2500" in text[0] and "900 tokens" in text[0] and text[1].split()[2] == "-"
