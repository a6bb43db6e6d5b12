"""leaderboard.png: mean accuracy of each row with its 95% interval, and its test-split score.

Drawn on matplotlib's Agg canvas directly (never pyplot), like `classifiers.plots`, so nothing
depends on or changes the process-wide backend; written whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

from classifiers.bench.leaderboard import RANK_METRIC, BenchResult
from classifiers.plots import save_png

_COLOURS = {"best": "#d62728", "tied with best": "#1f77b4", "worse than best": "#7f7f7f"}


def plot_leaderboard(result: BenchResult, path: Path) -> Path:
    """A dot plot, best at the top: dots with 95% interval bars, crosses for the test split."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result.rows
    figure = Figure(figsize=(9.0, 1.4 + 0.42 * len(rows)), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    for y, row in enumerate(rows):
        s = row.summaries[RANK_METRIC]
        colour = _COLOURS[row.verdict]
        if s.low is not None:
            ax.errorbar(
                s.mean, y, xerr=[[s.mean - s.low], [s.high - s.mean]], fmt="o", color=colour, capsize=3
            )
        else:
            ax.plot(s.mean, y, "o", color=colour)
        if row.test is not None:
            ax.plot(row.test["metrics"][RANK_METRIC], y, "x", color="black", markersize=6)
    best = rows[0].summaries[RANK_METRIC].mean
    ax.axvline(best, color=_COLOURS["best"], linestyle=":", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([row.name + (" *" if "selected" in row.note else "") for row in rows])
    ax.invert_yaxis()  # rank 1 on top
    ax.set_xlabel(
        f"{RANK_METRIC}: mean over {len(result.folds)} folds, 95% corrected t interval; x = test split"
    )
    store = result.store
    ax.set_title(
        f"store {store['digest'][:12]} (fingerprint {store['fingerprint_digest'][:12]}), "
        f"featurestore {result.versions['featurestore']}",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    for verdict, colour in _COLOURS.items():
        ax.plot([], [], "o", color=colour, label=verdict)
    ax.plot([], [], "x", color="black", label="test split")
    # Outside the axes: inside, it would cover the rows at the bottom.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    return save_png(figure, path)
