"""The pipeline's ceiling: extract with the model replaced by a no-op of the same batch shapes.

For each decoder, on the same real photos, side by side in one run:
(d) decode alone: read + sha256 + decode in one process (images/s per core);
(p1), (p2) the whole pipeline (discovery, read once, hash, decode, rows, HDF5 pieces,
    checksums, fsync, manifest commits) with 1 and 2 decode processes, the no-op model in the
    main process; and (t) the same with decode threads;
and, per decoder, the maps' agreement with `pil` (cosine over the photos, through the real
conv base when --weights names one).

    python scripts/bench_pipeline.py [--per-class 150] [--size 150] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from _common import copy_photos, machine_line

from featurestore import ExtractConfig, run_extract
from featurestore.decoding import decode_file
from featurestore.extractor import Extractor
from featurestore.fingerprint import DECODERS
from featurestore.format import map_datasets
from featurestore.vgg16 import output_shape


class NoOpExtractor(Extractor):
    """The fingerprint and batch shapes of the real extractor; maps are zeros, at no cost."""

    def embed(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images) + (-len(images)) % self.batch_size  # padded batches, as the real one
        names = map_datasets(self.fingerprint)
        maps = {name: np.zeros((n, *output_shape(self.layer, self.input_size)), np.float32) for name in names}
        return {name: m[: len(images)] for name, m in maps.items()}


def decode_alone(paths: list[Path], size: int, decoder: str) -> float:
    started = time.perf_counter()
    for path in paths:
        assert decode_file(path, size, decoder=decoder).pixels is not None
    return len(paths) / (time.perf_counter() - started)


def pipeline_rate(source: Path, store: Path, extractor: Extractor, **kwargs: object) -> float:
    config = ExtractConfig(source=source, store=store, progress=False, **kwargs)  # type: ignore[arg-type]
    started = time.perf_counter()
    summary = run_extract(config, extractor)
    seconds = time.perf_counter() - started
    assert summary.failed == 0 and summary.computed == summary.discovered, summary
    return summary.computed / seconds


def cosines(paths: list[Path], size: int, weights: str, batch_size: int) -> dict[str, float]:
    """Mean and min cosine of each decoder's maps to pil's, through the real conv base."""
    base = Extractor(weights=weights, input_size=size, batch_size=batch_size)
    reference = None
    out = {}
    for decoder in DECODERS:
        pixels = np.stack([decode_file(p, size, decoder=decoder).pixels for p in paths]).astype(np.float32)
        maps = base.embed(pixels)["features"].reshape(len(paths), -1)
        if reference is None:
            reference = maps
        cos = (maps * reference).sum(1) / (np.linalg.norm(maps, axis=1) * np.linalg.norm(reference, axis=1))
        out[decoder] = (float(cos.mean()), float(cos.min()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--cosine-images", type=int, default=64, help="photos for the maps' cosine")
    args = parser.parse_args()

    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = copy_photos(tmp / "images", args.per_class)
        n = len(paths)
        print(f"{n} real photos, input {args.size}px, batch {args.batch_size}; images/s")
        print(
            f"{'decoder':<10} {'(d) alone/core':>15} {'(t) 2 threads':>14} {'(p1) 1 proc':>12} "
            f"{'(p2) 2 procs':>13} {'p2/p1':>6}"
        )
        for decoder in DECODERS:
            noop = NoOpExtractor(
                weights=args.weights, input_size=args.size, batch_size=args.batch_size, decoder=decoder
            )
            common = dict(
                input_size=args.size, batch_size=args.batch_size, decoder=decoder, precision="float32"
            )
            decode_alone(paths[:8], args.size, decoder)  # warm the page cache and the plugins
            d = decode_alone(paths, args.size, decoder)
            rates = {}
            for label, kwargs in (
                ("t", dict(decode_in="threads", workers=2)),
                ("p1", dict(decode_in="processes", workers=1)),
                ("p2", dict(decode_in="processes", workers=2)),
            ):
                rates[label] = pipeline_rate(
                    tmp / "images", tmp / f"{decoder}-{label}", noop, **common, **kwargs
                )
            print(
                f"{decoder:<10} {d:15.1f} {rates['t']:14.1f} {rates['p1']:12.1f} {rates['p2']:13.1f} "
                f"{rates['p2'] / rates['p1']:5.2f}x"
            )
        k = min(args.cosine_images, n)
        print(f"maps' cosine to pil ({args.weights} weights, {k} photos): ", end="")
        print(
            ", ".join(
                f"{d} mean {m:.5f} min {lo:.5f}"
                for d, (m, lo) in cosines(paths[:k], args.size, args.weights, args.batch_size).items()
            )
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
