"""One way to draw: matplotlib's object API on an Agg canvas, never pyplot, whose global
figure state leaks memory in a long-running worker and is not thread-safe; no automatic
layout, which costs more than the drawing (a trial's curves stay ~0.1 s)."""

from __future__ import annotations


def figure(rows: int, width: float, height: float, title: str, **subplots):
    """A figure of `rows` axes stacked (shared x with sharex=True) and the axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # Margins in inches, so that tick labels fit whatever the size.
    fig.subplots_adjust(left=1.15 / width, right=1 - 0.2 / width, top=1 - 0.35 / height, bottom=0.5 / height,
                        hspace=0.12)
    axes = fig.subplots(rows, 1, squeeze=False, **subplots)[:, 0]
    axes[0].set_title(title)
    return fig, list(axes)
