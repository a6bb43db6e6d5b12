"""Run record fields from what a job knows: an extract summary, an open store, failures.

Kept apart from the recorder (featurestore.runs) so that the record's writing and reading do
not depend on the shapes of the jobs' results, and the jobs need only these small adapters.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurestore.format import MANIFEST, PIECES

#: Counts an extract run reports; other kinds may report any subset.
COUNT_KEYS = ("discovered", "new", "changed", "retried", "removed", "unchanged", "failed", "computed")
#: Statuses of runs that ended (a reader may also see "running" and "killed").
FINISHED = ("ok", "interrupted", "error")


def reason_category(reason: str) -> str:
    """The kind of a failure reason, without the file-specific detail:
    'corrupt image data: broken data stream' -> 'corrupt image data'."""
    head = re.split(r": | \(", reason, maxsplit=1)[0].strip()
    return head[:80] or "unknown"


def failures_by_reason(failures: Mapping[str, str]) -> dict[str, int]:
    """{relpath: reason} -> {reason category: count}, largest first."""
    counts: dict[str, int] = {}
    for reason in failures.values():
        key = reason_category(reason)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def stage(seconds: float, images: int | None = None) -> dict[str, float | int | None]:
    """One entry of a record's `stages`: seconds, images and images/s."""
    rate = images / seconds if images is not None and seconds > 0 else None
    return {"seconds": float(seconds), "images": images, "images_per_s": rate}


def store_bytes(store_dir: str | Path) -> int:
    """Bytes of a store's data: the manifest and the committed-or-not pieces (not runs/, .tmp/)."""
    store_dir = Path(store_dir)
    total = 0
    for path in [store_dir / MANIFEST, *sorted((store_dir / PIECES).glob("*"))]:
        with contextlib.suppress(OSError):  # gone meanwhile, or never there
            total += path.stat().st_size
    return total


def store_fields(store: Any) -> dict[str, Any]:
    """Record fields that describe an open store after a run: live rows per class, size, and
    what computes its maps (precision, decoder, Keras backend, device kind)."""
    classes: dict[str, int] = {}
    for per_label in store.counts().values():
        for label, n in per_label.items():
            classes[label] = classes.get(label, 0) + n
    fingerprint = store.fingerprint
    compute = {"precision": fingerprint.precision, "decoder": fingerprint.decoder}
    compute.update(fingerprint.recorded_compute())  # Keras backend and device kind of its maps
    return {
        "generation": store.generation,
        "fingerprint_digest": fingerprint.digest,
        "store": {
            "rows": len(store),
            "classes": classes,
            "bytes": store_bytes(store.path),
            "compute": compute,
        },
    }


def extract_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Record fields from an extract summary's `--json` dict (docs/schemas/extract-summary...).

    Takes the mapping, not the class, so that this module does not depend on the pipeline.
    """
    counts = {key: int(summary[key]) for key in COUNT_KEYS if key in summary}
    fields: dict[str, Any] = {
        "counts": counts,
        "failed_by_reason": failures_by_reason(summary.get("failures", {})),
    }
    if summary.get("stages"):
        fields["stages"] = dict(summary["stages"])
    else:  # today's summary: the whole run, and the model's throughput
        fields["stages"] = {"total": stage(summary["seconds"], counts.get("computed"))}
        if summary.get("images_per_s"):
            seconds = counts.get("computed", 0) / summary["images_per_s"]
            fields["stages"]["model"] = stage(seconds, counts.get("computed"))
    return fields


def failure_totals(records: list[dict[str, Any]]) -> tuple[int, int]:
    """(failed, attempted) over finished extract runs: attempted = new + changed + retried."""
    failed = attempted = 0
    for record in records:
        if record.get("kind") != "extract" or record.get("status") not in FINISHED:
            continue
        counts = record.get("counts") or {}
        failed += int(counts.get("failed", 0))
        attempted += sum(int(counts.get(k, 0)) for k in ("new", "changed", "retried"))
    return failed, attempted


def compact_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Record fields from a compact summary's dict (featurestore.compact.CompactSummary)."""
    counts = ("live_rows", "dropped_rows", "rewritten_pieces", "new_pieces")
    return {
        "counts": {key: int(summary[key]) for key in counts if key in summary},
        "extra": {
            key: summary[key] for key in ("pieces_before", "pieces_after", "retained_until") if key in summary
        },
    }
