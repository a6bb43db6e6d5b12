"""What a store holds: counts, fingerprint, failures, size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from featurestore.compact import DUE_DEAD_FRACTION, DUE_SMALL_PIECES, health
from featurestore.store import open_store


def _folder_bytes(path: str) -> int:
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                total += _folder_bytes(entry.path)
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def store_info(path: str | Path) -> dict[str, Any]:
    store = open_store(path)
    manifest = store.manifest
    state = health(store)
    return {
        "path": str(store.path),
        "rows": len(store),
        "bytes": _folder_bytes(str(path)),
        "pieces": len(manifest.pieces),
        "compaction": {
            "rows_in_pieces": state.rows_in_pieces,
            "dead_rows": state.dead_rows,
            "small_pieces": state.small_pieces,
            "retired_pieces": len(manifest.retired),
            "due": state.due,
            "policy": f"extract compacts when >= {DUE_DEAD_FRACTION:.0%} of the stored rows are dead "
            f"or >= {DUE_SMALL_PIECES} pieces are small",
        },
        "generation": manifest.generation,
        "source_root": manifest.source_root,
        "class_names": list(store.class_names),
        "split_fractions": manifest.split_fractions.to_dict(),
        "counts": store.counts(),
        "fingerprint": store.fingerprint.to_dict(),
        "fingerprint_digest": store.fingerprint.digest,
        "digest": store.digest,
        "failures": manifest.failures,
        "updated": manifest.updated,
    }


def format_info(report: dict[str, Any]) -> str:
    """The human-readable form of `store_info`."""
    lines = [
        f"store {report['path']}: {report['rows']} images, {report['bytes'] / 2**20:.1f} MiB, "
        f"{report['pieces']} pieces, generation {report['generation']}"
    ]
    c = report["compaction"]
    dead = c["dead_rows"] / c["rows_in_pieces"] if c["rows_in_pieces"] else 0.0
    lines.append(
        f"compaction {'due' if c['due'] else 'not due'}: {c['dead_rows']} dead rows ({dead:.0%}), "
        f"{c['small_pieces']} small pieces, {c['retired_pieces']} replaced pieces kept for readers "
        f"({c['policy']})"
    )
    lines.append(f"source {report['source_root']}")
    for split, per_label in report["counts"].items():
        parts = ", ".join(f"{label or '(unlabeled)'} {n}" for label, n in sorted(per_label.items()))
        lines.append(f"  {split:<10} {sum(per_label.values()):>7}  {parts}")
    fp = report["fingerprint"]
    lines.append(
        f"fingerprint {report['fingerprint_digest'][:16]}: {fp['backbone']} {fp['layer']} "
        f"{fp['input_size']}px {fp['interpolation']} {fp['dtype']} weights {fp['weights_sha256'][:16]}"
    )
    versions = fp.get("library_versions", {})
    lines.append(
        f"computed in {fp['precision']} by keras backend {versions.get('keras_backend', '?')} "
        f"on {versions.get('device', '?')}, decoder {fp.get('decoder', 'pil')}"
    )
    stored = [
        *(["flipped images"] if fp.get("flip_views") else []),
        *([f"{fp['views']} augmented views"] if fp.get("views") else []),
    ]
    if stored:
        lines.append(f"views kept per image: the image, {', '.join(stored)}")
    lines.append(f"failures {len(report['failures'])}")
    lines.extend(f"  {path}: {failure['reason']}" for path, failure in sorted(report["failures"].items()))
    return "\n".join(lines)
