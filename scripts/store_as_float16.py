"""Copy a float32 store into a float16 one: the maps `extract --dtype float16` would write.

The extractor computes every map in float32 and casts it to the storage dtype last
(`featurestore.Extractor.embed`), so a float16 store of the same images holds exactly
float16(float32 maps). This copy gives that store without running VGG16 again, to measure what
float16 storage costs in accuracy (`featurestore bench F32 F16`) and saves in bytes.
`--check IMAGES` extracts the first few images with --dtype float16 and compares bit for bit.

    python scripts/store_as_float16.py runs/s150 runs/s150f16
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

import featurestore
from featurestore.format import FLIPPED, MAIN_MAPS
from featurestore.run_fields import store_bytes
from featurestore.writer import Row, StoreWriter


def copy_as_float16(source: Path, target: Path) -> int:
    """Write `target`, the float16 twin of the float32 store `source`; returns its rows."""
    store = featurestore.open_store(source)
    if store.fingerprint.dtype != "float32" or store.fingerprint.extra_layers or store.fingerprint.views:
        raise SystemExit(f"{source}: expected a float32 store without extra layers or augmented views")
    fingerprint = dataclasses.replace(store.fingerprint, dtype="float16")
    stat = {row["ids"]: (int(row["sizes"]), int(row["mtime_ns"])) for row in store.live_rows()}
    flips = store.fingerprint.flip_views
    rows = 0
    with StoreWriter(
        target,
        fingerprint=fingerprint,
        split_fractions=store.split_fractions,
        source_root=str(store.source_root),
        class_names=store.class_names,
    ) as writer:
        batches = store.iter_batches(None, batch_size=512)
        mirrors = store.iter_batches(None, batch_size=512, flipped=True) if flips else None
        for batch in batches:
            mirror = next(mirrors) if mirrors is not None else None
            piece = []
            for i, image_id in enumerate(batch.ids):
                maps = {MAIN_MAPS: batch.features[i].astype(np.float16)}
                if mirror is not None:
                    maps[f"{FLIPPED}/{MAIN_MAPS}"] = mirror.features[i].astype(np.float16)
                label = batch.labels[i]
                size, mtime_ns = stat[str(image_id)]
                piece.append(
                    Row(
                        relpath=str(batch.paths[i]),
                        image_id=str(image_id),
                        label=store.class_names[label] if label >= 0 else None,
                        split=str(batch.splits[i]),
                        size=size,
                        mtime_ns=mtime_ns,
                        maps=maps,
                    )
                )
            writer.commit_rows(piece)
            rows += len(piece)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a float32 store")
    parser.add_argument("target", type=Path, help="the float16 store to write")
    args = parser.parse_args()
    rows = copy_as_float16(args.source, args.target)
    before, after = store_bytes(args.source), store_bytes(args.target)
    print(f"{rows} rows; bytes per image: float32 {before / rows:.0f}, float16 {after / rows:.0f}")
    src, dst = featurestore.open_store(args.source), featurestore.open_store(args.target)
    a, b = src.load(None), dst.load(None)
    order = np.argsort(a.ids), np.argsort(b.ids)
    exact = np.array_equal(a.features[order[0]].astype(np.float16), b.features[order[1]])
    print(f"maps equal to float16(float32 maps): {exact}")
    sys.exit(0 if exact else 1)


if __name__ == "__main__":
    main()
