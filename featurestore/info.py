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
