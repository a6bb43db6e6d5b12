"""The leaderboard as text: the terminal table, leaderboard.csv, leaderboard.md, results.json.

Every file is written under a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifiers.bench.cells import METRICS
from classifiers.bench.leaderboard import RANK_METRIC, BenchResult, Row
from featurestore.fsutil import atomic_write_text

_LABELS = {
    "accuracy": "accuracy",
    "balanced_accuracy": "bal.acc",
    "f1_macro": "F1 macro",
    "roc_auc": "ROC-AUC",
    "log_loss": "log loss",
}


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _p(row: Row) -> str:
    if row.comparison is None:
        return "-"
    p = row.comparison.p_value
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _cells(row: Row) -> list[str]:
    acc = row.summaries[RANK_METRIC]
    interval = "n/a" if acc.low is None else f"[{acc.low:.3f}, {acc.high:.3f}]"
    test = None if row.test is None else row.test["metrics"][RANK_METRIC]
    name = row.name + (" *" if "selected" in row.note else "")
    return [
        str(row.rank),
        name,
        row.variant.reads,
        f"{_num(acc.mean)} ± {_num(acc.std)}",
        interval,
        *(_num(row.summaries[m].mean) for m in METRICS[1:]),
        _num(test),
        f"{row.fit_seconds:.2f}",
        f"{row.predict_seconds_per_1000:.3f}",
        _size(row.model_bytes),
        _p(row),
        row.verdict,
    ]


HEADERS = [
    "#",
    "classifier",
    "reads",
    "accuracy ± std",
    "95% CI",
    *(_LABELS[m] for m in METRICS[1:]),
    "test acc",
    "fit s",
    "pred s/1k",
    "size",
    "p vs best",
    "verdict",
]
_LEFT = {"classifier", "reads", "verdict"}
#: Columns added after "reads" when the benchmark compares feature settings.
COST_HEADERS = ["size px", "extract s/img", "KB/img"]


def headers(result: BenchResult) -> list[str]:
    """The table's columns: the cost of each feature setting too when there are several."""
    return [*HEADERS[:3], *COST_HEADERS, *HEADERS[3:]] if result.settings else list(HEADERS)


def row_cells(result: BenchResult, row: Row) -> list[str]:
    """A row's cells under `headers(result)`."""
    cells = _cells(row)
    if not result.settings:
        return cells
    cost = next(s for s in result.settings if s["label"] == row.variant.setting)
    seconds, size = cost["extract_seconds_per_image"], cost["bytes_per_image"]
    extra = [
        str(cost["input_size"]) + (" f16" if cost["dtype"] == "float16" else ""),
        "n/a" if seconds is None else f"{seconds:.3f}",
        "n/a" if size is None else f"{size / 1024:.1f}",
    ]
    return [*cells[:3], *extra, *cells[3:]]


def fixed_width(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain columns separated by two spaces; text left-aligned, numbers right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if h in _LEFT else c.rjust(w) for c, w, h in zip(cells, widths, headers, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _context_lines(result: BenchResult) -> list[str]:
    store, config = result.store, result.config
    fp = store["fingerprint"]
    return [
        f"store {store['path']}: {store['pool_rows']} train+validation rows in {config.folds} folds "
        f"x {config.repeats} repeat(s), seed {config.seed}; {store['test_rows']} test rows",
        f"store digest {store['digest'][:16]}, fingerprint {store['fingerprint_digest'][:16]} "
        f"({fp['backbone']} {fp['layer']} @ {fp['input_size']}px, weights {fp['weights_sha256'][:12]})",
        f"featurestore {result.versions['featurestore']}, scikit-learn {result.versions['scikit-learn']}",
        *_setting_lines(result),
    ]


def _setting_lines(result: BenchResult) -> list[str]:
    """One line per feature setting: its store and what it adds, on the same images and folds."""
    lines = []
    for s in result.settings:
        views = [
            *(["fit on flipped views"] if s["flips"] else []),
            *(["test-time flips"] if s["tta"] else []),
            *([f"fit on {s.get('views', 0)} augmented views per image"] if s.get("augmented_views") else []),
            *([f"test-time average over the image and its {s['views']} views"] if s.get("tta_views") else []),
        ]
        stored = ", stores flipped views" if s["flip_views"] else ""
        stored += f", stores {s['views']} augmented views" if s.get("views") else ""
        added = ": " + ", ".join(views) if views else ""
        lines.append(
            f"setting {s['label']}: {s['store']} ({s['images']} images, {s['input_size']}px "
            f"{s['dtype']}{stored}){added}"
        )
    if result.settings:
        lines.append("every setting is scored on the same images and folds (the images all its stores hold)")
    return lines


NOTES = [
    "95% CI: t interval over folds with the Nadeau-Bengio corrected variance (folds overlap).",
    f"p vs best: corrected resampled t-test of {RANK_METRIC}, paired by fold; tied with best when p >= 0.05.",
    "test acc: final fit on all of train+validation, scored once on the held-back test split.",
]


def _warnings(row: Row) -> list[str]:
    """The kinds of warning (e.g. ConvergenceWarning) any of a row's fits raised."""
    cells = [*row.folds, *([row.test] if row.test else [])]
    return sorted({note.split(":", 1)[0] for cell in cells for note in cell.get("warnings", [])})


def format_table(result: BenchResult) -> str:
    """The terminal leaderboard with its context and notes."""
    table = fixed_width(headers(result), [row_cells(result, row) for row in result.rows])
    lines = [table, "", *_context_lines(result)]
    lines.append(f"cells: {result.cells_total} ({result.cells_reused} reused), {result.seconds:.1f} s")
    lines += NOTES
    warned = {row.name: _warnings(row) for row in result.rows}
    if any(warned.values()):
        listed = "; ".join(f"{name}: {', '.join(kinds)}" for name, kinds in warned.items() if kinds)
        lines.append(f"warnings while fitting (details per fold in results.json): {listed}")
    if any("selected" in row.note for row in result.rows):
        lines.append("* best of its grid, selected on the folds it is scored on (optimistic); see test acc.")
    return "\n".join(lines)


def csv_rows(result: BenchResult) -> list[dict[str, Any]]:
    """One flat dict per leaderboard row, every figure at full precision."""
    out = []
    for row in result.rows:
        record: dict[str, Any] = {
            "rank": row.rank,
            "name": row.name,
            **({"setting": row.variant.setting} if result.settings else {}),
            "classifier": row.variant.classifier,
            "features": row.variant.reads,
            "grid_params": json.dumps(row.variant.params, sort_keys=True),
        }
        for metric in METRICS:
            s = row.summaries[metric]
            record |= {f"{metric}_mean": s.mean, f"{metric}_std": s.std}
            record |= {f"{metric}_ci95_low": s.low, f"{metric}_ci95_high": s.high}
        for metric in METRICS:
            record[f"test_{metric}"] = None if row.test is None else row.test["metrics"][metric]
        c = row.comparison
        record |= {
            "fit_seconds": row.fit_seconds,
            "predict_seconds_per_1000": row.predict_seconds_per_1000,
            "model_bytes": row.model_bytes,
            "mean_difference_vs_best": None if c is None else c.mean_difference,
            "p_value_vs_best": None if c is None else c.p_value,
            "verdict": row.verdict,
            "note": row.note,
            "store_digest": result.store["digest"],
            "fingerprint_digest": result.store["fingerprint_digest"],
            "package_version": result.versions["featurestore"],
        }
        if result.settings:
            cost = next(c for c in result.settings if c["label"] == row.variant.setting)
            record |= {k: cost[k] for k in ("input_size", "dtype", "flips", "tta", "digest")}
            record["tta_views"] = cost.get("tta_views", False)
            record["extract_seconds_per_image"] = cost["extract_seconds_per_image"]
            record["bytes_per_image"] = cost["bytes_per_image"]
        out.append(record)
    return out


def to_csv(result: BenchResult) -> str:
    rows = csv_rows(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buffer.getvalue()


def to_markdown(result: BenchResult) -> str:
    """A markdown page: context, the leaderboard table, the notes."""
    rows = [row_cells(result, row) for row in result.rows]
    columns = headers(result)
    escape = [[c.replace("|", "\\|") for c in r] for r in rows]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(r) + " |" for r in escape]
    context = [f"- {line}" for line in _context_lines(result)]
    fingerprint = json.dumps(result.store["fingerprint"], sort_keys=True)
    notes = [f"- {n}" for n in NOTES]
    if any("selected" in row.note for row in result.rows):
        notes.append("- \\* best of its grid, selected on the folds it is scored on (optimistic).")
    return "\n".join(
        [
            "# Classifier benchmark",
            "",
            *context,
            f"- fingerprint: `{fingerprint}`",
            "",
            *table,
            "",
            *notes,
            "",
        ]
    )


def write_reports(result: BenchResult, out: Path) -> dict[str, str]:
    """leaderboard.csv, leaderboard.md, leaderboard.png and results.json in `out`; their paths."""
    from classifiers.bench.plot import plot_leaderboard

    files = {
        "csv": out / "leaderboard.csv",
        "markdown": out / "leaderboard.md",
        "png": out / "leaderboard.png",
        "json": out / "results.json",
    }
    atomic_write_text(files["csv"], to_csv(result))
    atomic_write_text(files["markdown"], to_markdown(result))
    plot_leaderboard(result, files["png"])
    paths = {name: str(path) for name, path in files.items()}
    data = result.to_dict() | {"files": paths}
    atomic_write_text(files["json"], json.dumps(data, indent=1, allow_nan=False) + "\n")
    return paths
