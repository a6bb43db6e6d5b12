"""PNG plots written next to a model: training curves of Keras heads, confusion matrices.

Figures are drawn on matplotlib's Agg canvas directly, never through pyplot, so nothing
depends on (or changes) the process-wide backend and no window can open. A PNG is written
whole or not at all (`save_png`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.fsutil import atomic_file


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Any, path: Path) -> Path:
    """Write `figure` as a PNG under a temporary name, then move it into place."""
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_training_curves(
    history: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "training",
    best_epoch: int | None = None,
) -> Path:
    """Accuracy and loss per epoch, train vs validation (when recorded), side by side."""
    path = Path(path)
    figure = _figure(10, 4)
    axes = figure.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, label, style in ((metric, "train", "-o"), (f"val_{metric}", "validation", "-s")):
            values = history.get(key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, markersize=3, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{title}: {metric}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    figure.tight_layout()
    return save_png(figure, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "confusion matrix",
) -> Path:
    """Counts per (true, predicted) class, with the row-normalised share in each cell."""
    path = Path(path)
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 2.5 + 0.6 * len(class_names)
    figure = _figure(size + 1, size)
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label="share of the true class")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            color = "white" if shares[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{counts[i, j]}\n{shares[i, j]:.0%}", ha="center", va="center", color=color, fontsize=8
            )
    figure.tight_layout()
    return save_png(figure, path)
