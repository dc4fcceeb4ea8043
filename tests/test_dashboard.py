"""`tunefleet dashboard` serves the real optuna-dashboard on the same storage,
and each trial's note there says how it ended."""

from __future__ import annotations

import json
import time
import urllib.request

from conftest import free_port, start_tunefleet, tunefleet


def _get(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def _check_curves(port: int, study_id: int, trial: dict) -> None:
    """The trial's curves, uploaded as artifacts, come back through the dashboard's own routes."""
    files = {a["filename"]: a for a in trial["artifacts"]}
    stem = f"trial-{trial['number']}-curves"
    assert set(files) == {f"{stem}.json", f"{stem}.png"}, files
    base = f"http://127.0.0.1:{port}/artifacts/{study_id}/{trial['trial_id']}"
    status, body = _get(f"{base}/{files[stem + '.json']['artifact_id']}", time.time() + 10)
    series = json.loads(body)["series"]
    assert [step for step, _ in series["train_loss"]] == list(range(1, 5))
    assert [step for step, _ in series["eval_loss"]] == [2, 4]
    assert len(series["grad_norm"]) == 4 and len(series["learning_rate"]) == 4
    if trial["state"] == "Complete":  # a trial's value is its best eval loss, not its last
        assert abs(min(loss for _, loss in series["eval_loss"]) - trial["values"][0]) < 1e-9
    status, png = _get(f"{base}/{files[stem + '.png']['artifact_id']}", time.time() + 10)
    assert status == 200 and png.startswith(b"\x89PNG")


def test_dashboard_lists_the_study_and_each_trial_has_its_note(tiny, tmp_path):
    model, dataset = tiny
    created = tunefleet("study", "create", "watched", "--model", model, "--dataset", dataset, "--method", "qlora",
                        "--n-trials", 2, "--pruner", "none", "--max-steps", 4, "--eval-steps", 2, "--seq-len", 48, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    worked = tunefleet("worker", "watched", "--threads", 1, cwd=tmp_path)
    assert worked.returncode == 0, worked.stderr
    exported = tunefleet("export", "watched", "--out", tmp_path / "best", "--merge", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    port = free_port()
    server = start_tunefleet("dashboard", "--port", port, cwd=tmp_path)
    try:
        status, body = _get(f"http://127.0.0.1:{port}/api/studies", time.time() + 60)
        assert status == 200
        (summary,) = json.loads(body)["study_summaries"]
        assert summary["study_name"] == "watched"
        status, body = _get(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0", time.time() + 10)
        detail = json.loads(body)
        trials = detail["trials"]
        assert len(trials) == 2
        # The study's note says which trial was exported, and where.
        note = detail["note"]["body"]
        assert "Exported trials" in note and str(tmp_path / "best") in note, note
        # ...and the search's progress, its plot redrawn in place as trials ended (one artifact).
        assert "## Search progress" in note and "configurations: 2 complete; 0 more may start" in note, note
        assert "best eval loss by tokens spent: " in note, note
        (plot,) = [a for a in detail["artifacts"] if a["filename"] == "search-progress.png"]
        assert f"(/artifacts/{summary['study_id']}/{plot['artifact_id']})" in note
        status, png = _get(f"http://127.0.0.1:{port}/artifacts/{summary['study_id']}/{plot['artifact_id']}",
                           time.time() + 10)
        assert status == 200 and png.startswith(b"\x89PNG")
        for trial in trials:
            note = trial["note"]["body"]
            assert note.startswith(f"## Trial {trial['number']}: ") and "eval loss by step: 2:" in note
            assert ("complete" in note) == (trial["state"] == "Complete")
            _check_curves(port, summary["study_id"], trial)
        status, page = _get(f"http://127.0.0.1:{port}/dashboard", time.time() + 10)
        assert status == 200 and b"<html" in page.lower()
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/" in output, "bound to 127.0.0.1 by default"
