"""The report's charts: PNG bytes from per-night figures (featurestore.report gathers them).

Drawn on matplotlib's Agg canvas directly, never through pyplot: nothing depends on or changes
the process-wide backend, and no window can open on a headless scheduler.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

WIDTH, HEIGHT, DPI = 8.0, 3.2, 100


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _nights_axis(ax: Any, nights: Sequence[str]) -> None:
    ax.set_xticks(range(len(nights)))
    step = max(1, len(nights) // 12)  # at most about a dozen labels, whatever the history's length
    ax.set_xticklabels([n if i % step == 0 else "" for i, n in enumerate(nights)], rotation=30, ha="right")
    ax.grid(True, axis="y", alpha=0.3)


def stacked_bars(
    nights: Sequence[str], series: Mapping[str, Sequence[float]], ylabel: str, title: str
) -> bytes:
    """One bar per night, stacked by series (images by outcome, failures by reason)."""
    figure = _figure()
    ax = figure.subplots()
    bottom = np.zeros(len(nights))
    for name, values in series.items():
        values = np.asarray(values, dtype=float)
        ax.bar(range(len(nights)), values, bottom=bottom, label=name)
        bottom += values
    _nights_axis(ax, nights)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if series:
        ax.legend(fontsize="small", loc="upper left")
    return _png(figure)


def lines(
    nights: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    ylabel: str,
    title: str,
    *,
    threshold: float | None = None,
    flagged: Sequence[bool] | None = None,
    ylim: tuple[float, float] | None = None,
) -> bytes:
    """One line per series over the nights (None: no value); a dashed threshold line and red
    rings on flagged nights if given."""
    figure = _figure()
    ax = figure.subplots()
    x = np.arange(len(nights))
    for name, values in series.items():
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(x, y, "-o", markersize=4, label=name)
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if flagged is not None and series:
        first = np.array([np.nan if v is None else v for v in next(iter(series.values()))], dtype=float)
        hits = np.asarray(flagged, dtype=bool)
        ax.scatter(x[hits], first[hits], s=120, facecolors="none", edgecolors="red", label="drifted")
    _nights_axis(ax, nights)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left")
    return _png(figure)


def shares(nights: Sequence[str], series: Mapping[str, Sequence[float]], title: str) -> bytes:
    """Stacked areas of shares that sum to 1 per night (class balance)."""
    figure = _figure()
    ax = figure.subplots()
    names = list(series)
    values = np.array([series[n] for n in names], dtype=float)
    totals = values.sum(axis=0)
    values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    ax.stackplot(range(len(nights)), values, labels=names)
    _nights_axis(ax, nights)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of live images")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left")
    return _png(figure)
