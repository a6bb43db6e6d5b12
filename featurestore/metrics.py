"""A run's figures in the Prometheus text format, for node_exporter's textfile collector.

node_exporter reads every `*.prom` file in its `--collector.textfile.directory` on each scrape,
so the file is written to a temporary name in the same folder and renamed over the old one
(fsutil): a scrape sees the previous run's figures or this one's, never half a file. Give each
store and job kind its own file (e.g. `featurestore_pets_extract.prom`): a file holds one run.

Every series has the labels `store` and `kind`; names follow Prometheus' conventions (base
units, `_seconds`, `_bytes`, `_total` only for counters, which these are not: each run replaces
them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from featurestore.errors import ConfigError
from featurestore.fsutil import atomic_write_text
from featurestore.runs import parse_time

PREFIX = "featurestore_"
STATUSES = ("ok", "interrupted", "error", "running", "killed")


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Family:
    """One metric: HELP and TYPE once, then its samples."""

    def __init__(self, name: str, help_text: str, base: Mapping[str, str]) -> None:
        self.name = PREFIX + name
        self.help = help_text
        self.base = dict(base)
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float | None, **labels: str) -> None:
        if value is not None:
            self.samples.append(({**self.base, **labels}, float(value)))

    def lines(self) -> Iterator[str]:
        if not self.samples:
            return
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in self.samples:
            text = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
            yield f"{self.name}{{{text}}} {_number(value)}"


def metrics_text(
    record: Mapping[str, Any], *, store: str, last_success: Mapping[str, Any] | None = None
) -> str:
    """The exposition text of one run record (`featurestore.runs`); `last_success` is the newest
    record of this kind that ended ok (the alert "no successful run for a day" reads it)."""
    base = {"store": store, "kind": str(record.get("kind"))}
    families: list[_Family] = []

    def family(name: str, help_text: str) -> _Family:
        families.append(_Family(name, help_text, base))
        return families[-1]

    status = record.get("status")
    state = family("run_status", "1 for how the last run ended (ok, interrupted, error, running, killed).")
    for name in STATUSES:
        state.add(1.0 if status == name else 0.0, status=name)
    family("run_exit_code", "Exit code of the last run (docs/exit-codes.md).").add(record.get("exit_code"))
    start = family("run_start_timestamp_seconds", "When the last run started, seconds since the epoch.")
    start.add(parse_time(record["started"]) if record.get("started") else None)
    end = family("run_end_timestamp_seconds", "When the last run ended, seconds since the epoch.")
    end.add(parse_time(record["ended"]) if record.get("ended") else None)
    family("run_duration_seconds", "Wall time of the last run.").add(record.get("seconds"))
    success = family("run_last_success_timestamp_seconds", "When the newest successful run ended.")
    if last_success and last_success.get("ended"):
        success.add(parse_time(last_success["ended"]))
    images = family("run_images", "Images of the last run by outcome (discovered, new, changed, ...).")
    for outcome, count in sorted((record.get("counts") or {}).items()):
        images.add(count, outcome=outcome)
    failed = family("run_failed_images", "Images the last run could not read, by reason.")
    for reason, count in (record.get("failed_by_reason") or {}).items():
        failed.add(count, reason=reason)
    seconds = family("run_stage_seconds", "Seconds the last run spent in each stage.")
    rate = family("run_stage_images_per_second", "Images per second of each stage of the last run.")
    for name, figures in sorted((record.get("stages") or {}).items()):
        seconds.add(figures.get("seconds"), stage=name)
        rate.add(figures.get("images_per_s"), stage=name)
    family("run_bytes_added", "Bytes the last run added to the store.").add(record.get("bytes_added"))
    family("store_generation", "Generation the last run committed.").add(record.get("generation"))
    store_info = record.get("store") or {}
    family("store_images", "Live images in the store after the last run.").add(store_info.get("rows"))
    family("store_bytes", "Size of the store after the last run.").add(store_info.get("bytes"))
    drift = record.get("drift")
    if drift:
        auc = family("drift_auc", "Domain-classifier AUC of tonight's images against earlier ones.")
        p_value = family("drift_p_value", "Permutation p-value of the kernel two-sample test.")
        for comparison in [drift["overall"], *drift.get("per_class", [])]:
            auc.add(comparison.get("auc"), scope=comparison["scope"])
            p_value.add(comparison.get("p_value"), scope=comparison["scope"])
        family("drift_threshold_auc", "AUC at which a night counts as drifted.").add(drift["threshold"])
        family("drift_detected", "1 if the last run's images drifted.").add(1.0 if drift["drifted"] else 0.0)
    lines = [line for f in families for line in f.lines()]
    return "\n".join(lines) + "\n"


def write_metrics(
    path: str | Path, record: Mapping[str, Any], *, store: str, last_success: Mapping[str, Any] | None = None
) -> Path:
    """Write `metrics_text` to `path` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if path.suffix != ".prom":
        raise ConfigError(f"{path}: node_exporter's textfile collector reads only *.prom files")
    atomic_write_text(path, metrics_text(record, store=store, last_success=last_success))
    return path
