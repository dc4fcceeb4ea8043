"""The study's note in optuna-dashboard, refreshed as trials end and as trials are exported: the
search's progress (search/trajectory.py) with its plot of the best eval loss against training
tokens, and the trials exported from it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from search import trajectory
from storage import optuna_compat as compat

EXPORTS = "tunefleet.exports"  # study user attr: [{"trial", "out", "at", "merged"}], shown in its note
PLOT = "tunefleet.progress_plot"  # study user attr: the progress plot's artifact id, rewritten in place


def refresh(study, spec, artifact_store) -> None:
    """Redraws the progress plot (one artifact, overwritten: the study does not pile up images)
    and rewrites the note."""
    from optuna_dashboard import save_note

    summary = trajectory.summary(study.get_trials(deepcopy=False), spec)
    plot_id = _plot(study, summary["best_by_tokens"], artifact_store) if artifact_store is not None else None
    save_note(study, note(study, summary, plot_id))


def note(study, summary: dict, plot_id: str | None) -> str:
    from search.views import progress

    lines = ["## Search progress", ""] + [f"- {line}" for line in progress(summary)]
    if plot_id:
        lines += ["", f"![best eval loss against training tokens](/artifacts/{compat.study_id(study)}/{plot_id})"]
    exports = study.user_attrs.get(EXPORTS, [])
    if exports:
        lines += ["", "## Exported trials", "", "| trial | eval loss | step | directory | merged | when |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {e['trial']} | {e['value']:.4f} | {e['step']} | `{e['out']}` | "
                  f"{'yes' if e['merged'] else 'no'} | {e['at']} |" for e in exports]
    return "\n".join(lines)


def _plot(study, curve: list, artifact_store) -> str:
    from optuna.artifacts import upload_artifact

    from workers import plots

    fig, (ax,) = plots.figure(1, 6, 3.5, f"{study.study_name}: best eval loss")
    if curve:
        tokens, losses = zip(*curve)
        ax.step(tokens, losses, "o-", where="post", markersize=4)
    ax.set_xlabel("training tokens spent")
    ax.set_ylabel("best eval loss")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "search-progress.png"
        fig.savefig(path)
        plot_id = study.user_attrs.get(PLOT)
        if plot_id is None:
            plot_id = upload_artifact(artifact_store=artifact_store, file_path=str(path), study_or_trial=study)
            study.set_user_attr(PLOT, plot_id)
        else:
            with path.open("rb") as f:
                artifact_store.write(plot_id, f)
    return plot_id
