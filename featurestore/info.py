"""What a store holds: counts, fingerprint, failures, size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurestore.store import open_store


def store_info(path: str | Path) -> dict[str, Any]:
    store = open_store(path)
    manifest = store.manifest
    return {
        "path": str(store.path),
        "rows": len(store),
        "bytes": sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()),
        "pieces": len(manifest.pieces),
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
    lines.append(f"failures {len(report['failures'])}")
    lines.extend(f"  {path}: {failure['reason']}" for path, failure in sorted(report["failures"].items()))
    return "\n".join(lines)
