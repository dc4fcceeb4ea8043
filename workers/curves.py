"""A trial's curves (train loss, eval loss, grad norm, learning rate) as artifacts.

They come from the Trainer's own log history, which a resumed trial inherits
from its checkpoint, so a trial finished by a second worker still shows its
whole run.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from optuna.artifacts import upload_artifact

SERIES = {"train_loss": "loss", "eval_loss": "eval_loss", "grad_norm": "grad_norm", "learning_rate": "learning_rate"}


def curves(log_history: list[dict]) -> dict[str, list[list[float]]]:
    """Per series, [step, value] pairs in step order."""
    out: dict[str, list[list[float]]] = {name: [] for name in SERIES}
    for entry in log_history:
        for name, key in SERIES.items():
            if entry.get(key) is not None and "step" in entry:
                out[name].append([entry["step"], float(entry[key])])
    return out


def plot(series: dict, title: str, path: Path) -> None:
    from workers import plots

    fig, (loss, grad, lr) = plots.figure(3, 6, 6, title, sharex=True)
    for name, style in (("train_loss", "-"), ("eval_loss", "o-")):
        if series[name]:
            loss.plot(*zip(*series[name]), style, label=name.replace("_", " "), markersize=4)
    loss.set_ylabel("loss")
    loss.legend()
    if series["grad_norm"]:
        steps, norms = zip(*series["grad_norm"])
        grad.plot(steps, [math.log10(max(n, 1e-30)) for n in norms])
    grad.set_ylabel("log10 grad norm")
    if series["learning_rate"]:
        lr.plot(*zip(*series["learning_rate"]))
    lr.set_ylabel("learning rate")
    lr.set_xlabel("optimizer step")
    fig.savefig(path)


def upload(trial, log_history: list[dict], artifact_store) -> list[str]:
    """Uploads curves.json and curves.png to the trial (before it is told); their artifact ids."""
    series = curves(log_history)
    with tempfile.TemporaryDirectory() as tmp:
        data, image = Path(tmp) / f"trial-{trial.number}-curves.json", Path(tmp) / f"trial-{trial.number}-curves.png"
        data.write_text(json.dumps({"trial": trial.number, "series": series}))
        plot(series, f"trial {trial.number}", image)
        return [upload_artifact(artifact_store=artifact_store, file_path=str(p), study_or_trial=trial)
                for p in (data, image)]
