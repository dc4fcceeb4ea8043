"""`tunefleet schedules`: the Trainer's own schedules, plotted for a run length."""

from __future__ import annotations

import pytest
from conftest import tunefleet

from workers.schedules import RESTART_CYCLES, curves


def test_schedule_shapes():
    lr = curves(steps=200, warmup_steps=20, peak=1.0)
    assert all(c[0] == 0.0 and c[20] == pytest.approx(1.0) for c in lr.values()), "linear warmup to the peak"
    assert lr["cosine"][110] == pytest.approx(0.5, abs=0.01) and lr["linear"][110] == pytest.approx(0.5, abs=0.01)
    assert lr["constant_with_warmup"][199] == 1.0
    restarts = lr["cosine_with_restarts"]
    jumps = sum(1 for i in range(21, 200) if restarts[i] > restarts[i - 1] + 0.5)
    assert jumps == RESTART_CYCLES - 1, "plain cosine has no restarts; cosine_with_restarts does"


def test_schedules_command_writes_a_plot(tmp_path):
    out = tmp_path / "s.png"
    result = tunefleet("schedules", "--steps", 100, "--warmup-ratio", 0.1, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cosine_with_restarts" in result.stdout and result.stderr == ""


def test_schedules_bad_input_is_one_line(tmp_path):
    result = tunefleet("schedules", "--steps", 0, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
