"""The nightly report: one self-contained HTML page a team looks at in the morning.

`build_report(store_dir, out_dir)` reads the store's run history (featurestore.runs) and its
manifest, and writes `out_dir/index.html` with the charts embedded as PNG data URIs (the page
works as a single attachment, or behind any web server) and the same PNGs beside it:

- the store now: images, classes, generation, failures by reason, the last runs;
- per night (UTC date of the run's start): images by outcome, throughput per stage, failures
  by reason, class balance, drift AUC with its threshold;
- the latest benchmark leaderboard (classifiers' bench writes results.json and leaderboard.csv)
  and trained models' metrics (a model folder's metadata.json), read as plain files.

No script, no external resource: the page renders the same offline.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from featurestore import report_charts as charts
from featurestore.errors import FeaturestoreError
from featurestore.fsutil import atomic_write_bytes, atomic_write_text
from featurestore.run_fields import failures_by_reason
from featurestore.runs import list_runs, parse_time

INDEX = "index.html"
RECENT_RUNS = 20
_OUTCOMES = ("new", "changed", "removed", "failed")
_MODEL_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss")


class ReportError(FeaturestoreError):
    """A leaderboard or model given to the report that cannot be read."""


@dataclasses.dataclass
class Night:
    """The extract runs that started on one UTC date, added up."""

    date: str
    runs: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    failed_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    stage_images: dict[str, int] = dataclasses.field(default_factory=dict)
    classes: dict[str, int] | None = None  # live images per class after the night's last run
    drift: dict[str, Any] | None = None  # the night's last drift result

    def images_per_s(self, stage: str) -> float | None:
        seconds = self.stage_seconds.get(stage)
        images = self.stage_images.get(stage)
        return images / seconds if seconds and images is not None else None


def nights(records: Sequence[Mapping[str, Any]]) -> list[Night]:
    """Extract runs grouped by the UTC date they started, oldest first."""
    by_date: dict[str, Night] = {}
    for record in records:
        if record.get("kind") != "extract" or not record.get("started"):
            continue
        date = dt.datetime.fromtimestamp(parse_time(record["started"]), dt.timezone.utc).date().isoformat()
        night = by_date.setdefault(date, Night(date))
        night.runs += 1
        for key, value in (record.get("counts") or {}).items():
            night.counts[key] = night.counts.get(key, 0) + int(value)
        for reason, value in (record.get("failed_by_reason") or {}).items():
            night.failed_by_reason[reason] = night.failed_by_reason.get(reason, 0) + int(value)
        for name, figures in (record.get("stages") or {}).items():
            if figures.get("seconds") is not None and figures.get("images") is not None:
                night.stage_seconds[name] = night.stage_seconds.get(name, 0.0) + figures["seconds"]
                night.stage_images[name] = night.stage_images.get(name, 0) + figures["images"]
        if (record.get("store") or {}).get("classes"):
            night.classes = dict(record["store"]["classes"])
        if record.get("drift"):
            night.drift = record["drift"]
    return [by_date[d] for d in sorted(by_date)]


# -- charts -----------------------------------------------------------------------------------
def _charts(history: list[Night], threshold: float | None) -> dict[str, tuple[str, bytes | None, str]]:
    """name -> (title, PNG or None, text shown instead when there is nothing to draw)."""
    dates = [n.date for n in history]
    out: dict[str, tuple[str, bytes | None, str]] = {}
    empty = "no extract runs recorded yet"
    out["images"] = (
        "Images per night",
        charts.stacked_bars(
            dates, {k: [n.counts.get(k, 0) for n in history] for k in _OUTCOMES}, "images", "images per night"
        )
        if history
        else None,
        empty,
    )
    stages = sorted({s for n in history for s in n.stage_seconds})
    out["throughput"] = (
        "Throughput per night",
        charts.lines(
            dates, {s: [n.images_per_s(s) for n in history] for s in stages}, "images/s", "throughput"
        )
        if stages
        else None,
        "no stage timings recorded yet",
    )
    reasons = sorted({r for n in history for r in n.failed_by_reason})
    out["failures"] = (
        "Failures by reason",
        charts.stacked_bars(
            dates, {r: [n.failed_by_reason.get(r, 0) for n in history] for r in reasons}, "images", "failures"
        )
        if reasons
        else None,
        "no failed images in any recorded run",
    )
    with_classes = [n for n in history if n.classes]
    names = sorted({c for n in with_classes for c in n.classes or {}})
    out["classes"] = (
        "Class balance over time",
        charts.shares(
            [n.date for n in with_classes],
            {c: [(n.classes or {}).get(c, 0) for n in with_classes] for c in names},
            "class balance",
        )
        if with_classes and names
        else None,
        "no class counts recorded yet",
    )
    with_drift = [n for n in history if n.drift]
    scopes = sorted({c["scope"] for n in with_drift for c in [n.drift["overall"], *n.drift["per_class"]]})
    scopes.sort(key=lambda s: s != "all")  # overall first: the red rings sit on its line
    line = threshold
    if line is None and with_drift:
        line = with_drift[-1].drift["threshold"]
    out["drift"] = (
        "Drift AUC over time",
        charts.lines(
            [n.date for n in with_drift],
            {s: [_auc(n.drift, s) for n in with_drift] for s in scopes},
            "domain-classifier AUC",
            "drift (0.5: tonight looks like earlier)",
            threshold=line,
            flagged=[bool(n.drift["drifted"]) for n in with_drift],
            ylim=(0.3, 1.02),
        )
        if with_drift
        else None,
        "no drift checks recorded yet",
    )
    return out


def _auc(drift: Mapping[str, Any], scope: str) -> float | None:
    for comparison in [drift["overall"], *drift["per_class"]]:
        if comparison["scope"] == scope:
            return comparison.get("auc")
    return None


# -- leaderboard and models ---------------------------------------------------------------------
def read_leaderboard(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a bench leaderboard: results.json, leaderboard.csv, or their folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json" if (path / "results.json").is_file() else path / "leaderboard.csv"
    try:
        if path.suffix == ".json":
            return _leaderboard_json(json.loads(path.read_text(encoding="utf-8")))
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"{path}: cannot read the leaderboard ({exc})") from None
    if not rows:
        raise ReportError(f"{path}: empty leaderboard")
    return rows[0], rows[1:]


def _leaderboard_json(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["rank", "name", "accuracy (folds)", "95% interval", "test accuracy", "verdict"]
    rows = []
    for row in results["leaderboard"]:
        accuracy = row["summary"]["accuracy"]
        interval = ""
        if accuracy.get("ci95_low") is not None:
            interval = f"{accuracy['ci95_low']:.4f} - {accuracy['ci95_high']:.4f}"
        test = (row.get("test") or {}).get("accuracy")
        rows.append(
            [
                str(row["rank"]),
                str(row["name"]),
                _fmt(accuracy.get("mean")),
                interval,
                _fmt(test),
                str(row.get("verdict", "")),
            ]
        )
    return headers, rows


def read_model(path: str | Path) -> dict[str, Any]:
    """A model folder's metadata.json as plain JSON (no model code is loaded)."""
    path = Path(path)
    try:
        metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not a model folder ({exc})") from None
    return metadata


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# -- the page -----------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _store_section(store_dir: Path) -> tuple[str, str]:
    """(heading line, html) about the store's last commit; the reason when it cannot be opened."""
    from featurestore.store import open_store

    try:
        store = open_store(store_dir)
    except FeaturestoreError as exc:
        return "store not readable", f"<p class='bad'>{html.escape(str(exc))}</p>"
    per_class: dict[str, int] = {}
    for per_label in store.counts().values():
        for label, n in per_label.items():
            per_class[label or "(unlabeled)"] = per_class.get(label or "(unlabeled)", 0) + n
    reasons = failures_by_reason({k: v["reason"] for k, v in store.failures.items()})
    parts = [
        _table(
            ["live images", "generation", "fingerprint", "classes"],
            [[len(store), store.generation, store.fingerprint.digest[:12], len(store.class_names)]],
        ),
        _table(["class", "images"], sorted(per_class.items())),
    ]
    if reasons:
        parts.append("<h3>Failed images now (retried every run)</h3>")
        parts.append(_table(["reason", "images"], list(reasons.items())))
    return f"{len(store)} images, generation {store.generation}", "".join(parts)


def _runs_table(records: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in reversed(records[-RECENT_RUNS:]):
        counts = r.get("counts") or {}
        rows.append(
            [
                (r.get("started") or "")[:19].replace("T", " "),
                r.get("kind"),
                r.get("status"),
                None if r.get("seconds") is None else f"{r['seconds']:.1f}",
                *(counts.get(k) for k in _OUTCOMES),
                r.get("generation"),
                r.get("error") or "",
            ]
        )
    return _table(["started (UTC)", "kind", "status", "seconds", *_OUTCOMES, "generation", "error"], rows)


def _models_table(models: Sequence[str | Path]) -> str:
    rows = []
    for path in models:
        metadata = read_model(path)
        for split, figures in (metadata.get("metrics") or {}).items():
            if isinstance(figures, dict):
                rows.append(
                    [
                        Path(path).name,
                        metadata.get("classifier"),
                        split,
                        *(figures.get(m) for m in _MODEL_METRICS),
                    ]
                )
    return _table(["model", "classifier", "split", *_MODEL_METRICS], rows)


_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 62em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }
th { background: #f4f4f4; } img { max-width: 100%; } .bad { color: #b00; } .muted { color: #777; }
"""


def build_report(
    store_dir: str | Path,
    out_dir: str | Path,
    leaderboard: str | Path | None = None,
    models: Sequence[str | Path] = (),
    *,
    threshold: float | None = None,
) -> Path:
    """Write `out_dir/index.html` (and the chart PNGs beside it); return the page's path.

    `leaderboard` is a bench output folder, its results.json or leaderboard.csv; `models` are
    model folders. `threshold` is the drift AUC line to draw (default: the one the last drift
    check used).
    """
    store_dir, out_dir = Path(store_dir), Path(out_dir)
    records = list_runs(store_dir)
    history = nights(records)
    headline, store_html = _store_section(store_dir)
    leaderboard_html = ""
    if leaderboard is not None:
        headers, rows = read_leaderboard(leaderboard)
        leaderboard_html = f"<h2>Leaderboard</h2><p class='muted'>{html.escape(str(leaderboard))}</p>"
        leaderboard_html += _table(headers, rows)
    models_html = f"<h2>Models</h2>{_models_table(models)}" if models else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for name, (title, png, instead) in _charts(history, threshold).items():
        sections.append(f"<h2>{html.escape(title)}</h2>")
        if png is None:
            sections.append(f"<p class='muted'>{html.escape(instead)}</p>")
            (out_dir / f"{name}.png").unlink(missing_ok=True)  # no stale chart beside the page
            continue
        atomic_write_bytes(out_dir / f"{name}.png", png)
        data = base64.b64encode(png).decode("ascii")
        sections.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(title)}">')
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    title = f"featurestore report: {store_dir.name}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="muted">{html.escape(str(store_dir))}: {html.escape(headline)}; generated {generated}</p>
<h2>The store now</h2>{store_html}
<h2>Last runs</h2>{_runs_table(records) if records else "<p class='muted'>no runs recorded</p>"}
{"".join(sections)}
{leaderboard_html}
{models_html}
</body></html>
"""
    page_path = out_dir / INDEX
    atomic_write_text(page_path, page)
    return page_path
