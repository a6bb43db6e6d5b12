"""The pipeline's ceiling: extract with the model replaced by a no-op of the same batch shapes.

For each decoder, on the same real photos, side by side in one run:
(d) decode alone: read + sha256 + decode in one process (images/s per core), and (d1), (d2)
    in 1 and 2 already started processes;
(p1), (p2) the whole pipeline (discovery, read once, hash, decode, rows, HDF5 pieces,
    checksums, fsync, manifest commits) with 1 and 2 decode processes, the no-op model in the
    main process; and (t) the same with decode threads;
and, per decoder, the maps' agreement with `pil` (cosine over the photos, through the real
conv base when --weights names one).

    python scripts/bench_pipeline.py [--per-class 150] [--size 150] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
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

    def embed(self, images: np.ndarray, image_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        n = len(images) + 1  # the guard image, as the real one
        names = map_datasets(self.fingerprint)
        maps = {name: np.zeros((n, *output_shape(self.layer, self.input_size)), np.float32) for name in names}
        return {name: m[: len(images)] for name, m in maps.items()}


def cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (decode processes, once shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def decode_alone(paths: list[Path], size: int, decoder: str) -> tuple[float, float]:
    """Images per wall second and per CPU second (the rate of one core of its own)."""
    started, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        assert decode_file(path, size, decoder=decoder).pixels is not None
    return len(paths) / (time.perf_counter() - started), len(paths) / (cpu_seconds() - cpu)


def _decode_chunk(job: tuple[list[Path], int, str]) -> int:
    paths, size, decoder = job
    return sum(decode_file(p, size, decoder=decoder).pixels is not None for p in paths)


def decode_in_processes(paths: list[Path], size: int, decoder: str, processes: int) -> float:
    """Decode alone in `processes` already started processes (start-up not timed)."""
    chunks = [(paths[i : i + 16], size, decoder) for i in range(0, len(paths), 16)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        list(pool.map(_decode_chunk, chunks[:processes]))
        started = time.perf_counter()
        done = sum(pool.map(_decode_chunk, chunks))
        seconds = time.perf_counter() - started
    assert done == len(paths)
    return len(paths) / seconds


def pipeline_rate(source: Path, store: Path, extractor: Extractor, **kwargs: object) -> tuple[float, float]:
    """Images per wall second and per CPU second of every process and thread of the run."""
    config = ExtractConfig(source=source, store=store, progress=False, **kwargs)  # type: ignore[arg-type]
    started, cpu = time.perf_counter(), cpu_seconds()
    summary = run_extract(config, extractor)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert summary.failed == 0 and summary.computed == summary.discovered, summary
    return summary.computed / seconds, summary.computed / cpu


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
        copy_photos(tmp / "warm", 4)  # the first run imports Keras (the run's provenance): untimed
        warm = NoOpExtractor(weights=args.weights, input_size=args.size, batch_size=args.batch_size)
        pipeline_rate(
            tmp / "warm", tmp / "warm-store", warm, input_size=args.size, batch_size=args.batch_size
        )
        print(f"{n} real photos, input {args.size}px, batch {args.batch_size}")
        print("images/s of wall time; [images per CPU second: one core's rate, whatever the load]")
        print(
            f"{'decoder':<10} {'(d) alone':>18} {'(d1) 1 proc':>12} {'(d2) 2 procs':>13} {'d2/d1':>6} "
            f"{'(t) 2 threads':>14} {'(p1) 1 proc':>20} {'(p2) 2 procs':>13} {'p2/p1':>6}"
        )
        for decoder in DECODERS:
            noop = NoOpExtractor(
                weights=args.weights, input_size=args.size, batch_size=args.batch_size, decoder=decoder
            )
            common = dict(
                input_size=args.size, batch_size=args.batch_size, decoder=decoder, precision="float32"
            )
            decode_alone(paths[:8], args.size, decoder)  # warm the page cache and the plugins
            d, d_cpu = decode_alone(paths, args.size, decoder)
            rates = {}
            for label, kwargs in (
                ("t", dict(decode_in="threads", workers=2)),
                ("p1", dict(decode_in="processes", workers=1)),
                ("p2", dict(decode_in="processes", workers=2)),
            ):
                rates[label] = pipeline_rate(
                    tmp / "images", tmp / f"{decoder}-{label}", noop, **common, **kwargs
                )
            d1 = decode_in_processes(paths, args.size, decoder, 1)
            d2 = decode_in_processes(paths, args.size, decoder, 2)
            (t, _), (p1, p1_cpu), (p2, _) = rates["t"], rates["p1"], rates["p2"]
            print(
                f"{decoder:<10} {d:8.1f} [{d_cpu:7.1f}] {d1:12.1f} {d2:13.1f} {d2 / d1:5.2f}x "
                f"{t:14.1f} {p1:10.1f} [{p1_cpu:7.1f}] {p2:13.1f} {p2 / p1:5.2f}x"
            )
        k = min(args.cosine_images, n)
        if not k:
            return
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
