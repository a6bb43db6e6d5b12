"""End to end vs model alone vs decode alone, on a GPU machine (or a CPU dry run): where the wall is.

Keras on the JAX backend by default (the GPU image has JAX and PyTorch, no TensorFlow). On N
distinct JPEGs (default 20,000: variants of the real photos when --photos has them, else
photo-like synthetic images), side by side in one run:
(d) decode alone: `featurestore.decoding.decode_file` (read once, sha256, decode, resize) in
    --workers processes, images/s;
(m) model alone: the conv base on random batches in the auto precision, images/s;
(e) `featurestore extract` end to end (decode processes, model, writer thread, commits).
Goal on one H200: (e) >= 10,000 images/s (12,000 hoped). A CPU dry run with small N checks
that the script works:

    python scripts/bench_device.py --n 32 --batch-size 8 --size 32 --backend tensorflow
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def parse_args() -> argparse.Namespace:
    from _common import DEFAULT_PHOTOS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="distinct JPEGs")
    parser.add_argument("--backend", default="jax", help="Keras backend (set before Keras loads)")
    parser.add_argument("--weights", default="random", help="speed does not depend on the values")
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="decode processes (0: the cores)")
    parser.add_argument("--decoder", default="pil", choices=("pil", "pil-draft"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    return parser.parse_args()


def make_jpeg(job: tuple[int, str | None, str]) -> None:
    """One distinct JPEG: a crop of a photo (a different crop per index), or a synthetic one."""
    import numpy as np
    from PIL import Image

    index, photo, out = job
    rng = np.random.default_rng(index)
    if photo is not None:
        with Image.open(photo) as image:
            image = image.convert("RGB")
            w, h = image.size
            dx, dy = int(rng.integers(0, max(1, w // 10))), int(rng.integers(0, max(1, h // 10)))
            image = image.crop((dx, dy, w - (index % 7), h - (index % 5)))
    else:
        y, x = np.mgrid[0:375, 0:500]
        phase = rng.uniform(0, 6.3, 3)
        base = np.stack(
            [np.sin(x / (19 + 4 * c) + phase[c]) * np.cos(y / (29 + 3 * c)) for c in range(3)], -1
        )
        pixels = np.clip(127 + 100 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
    folder = Path(out) / ("a" if index % 2 else "b")
    image.save(folder / f"{index:06d}.jpg", quality=90)


def make_tree(root: Path, n: int, photos: Path, workers: int) -> None:
    photo_files = sorted(p for p in photos.rglob("*.jpg")) if photos.is_dir() else []
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
    jobs = [(i, str(photo_files[i % len(photo_files)]) if photo_files else None, str(root)) for i in range(n)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(make_jpeg, jobs, chunksize=64))
    print(f"{n} JPEGs from {'the real photos' if photo_files else 'synthetic images'} in {root}")


def decode_chunk(job: tuple[list[str], int, str]) -> int:
    from featurestore.decoding import decode_file

    paths, size, decoder = job
    return sum(decode_file(p, size, decoder=decoder).pixels is not None for p in paths)


def decode_rate(root: Path, size: int, decoder: str, workers: int) -> float:
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    chunks = [(paths[i : i + 64], size, decoder) for i in range(0, len(paths), 64)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(decode_chunk, chunks[:workers]))  # start the processes, warm the imports
        started = time.perf_counter()
        done = sum(pool.map(decode_chunk, chunks))
        seconds = time.perf_counter() - started
    assert done == len(paths), f"{len(paths) - done} files did not decode"
    return len(paths) / seconds


def main() -> None:
    args = parse_args()
    os.environ.setdefault("KERAS_BACKEND", args.backend)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    workers = args.workers or len(os.sched_getaffinity(0))

    import keras
    import numpy as np
    from _common import machine_line

    from featurestore import ExtractConfig, run_extract
    from featurestore.compute import run_precision
    from featurestore.extractor import Extractor
    from featurestore.hardware import device_kind

    print(machine_line())
    precision = run_precision(args.precision, Path("/nonexistent-new-store"), rebuild=False)
    print(
        f"keras {keras.__version__} backend {keras.backend.backend()} on {device_kind()}; precision "
        f"{precision}; decoder {args.decoder}; input {args.size}px; batch {args.batch_size}; "
        f"{workers} decode processes"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        make_tree(root, args.n, args.photos, workers)
        d_rate = decode_rate(root, args.size, args.decoder, workers)

        extractor = Extractor(
            weights=args.weights,
            input_size=args.size,
            batch_size=args.batch_size,
            precision=precision,
            decoder=args.decoder,
        )
        batch = np.random.default_rng(0).uniform(0, 255, (args.batch_size, args.size, args.size, 3))
        batch = batch.astype("float32")
        extractor.embed(batch)  # build, compile, warm
        reps = max(2, min(50, args.n // args.batch_size))
        started = time.perf_counter()
        for _ in range(reps):
            extractor.embed(batch)
        m_rate = reps * args.batch_size / (time.perf_counter() - started)

        config = ExtractConfig(
            source=root,
            store=Path(tmp) / "store",
            weights=args.weights,
            input_size=args.size,
            batch_size=args.batch_size,
            precision=precision,
            decoder=args.decoder,
            workers=workers,
            decode_in="processes",
            commit_every=max(512, 4 * args.batch_size),
            progress=False,
        )
        started = time.perf_counter()
        summary = run_extract(config, extractor)
        e_seconds = time.perf_counter() - started
        assert summary.computed == args.n and summary.failed == 0, summary.line()
    e_rate = args.n / e_seconds
    wall = "decode" if d_rate < m_rate else "model"
    print(f"(d) decode alone, {workers} processes:  {d_rate:10.1f} images/s")
    print(f"(m) model alone ({precision}):{'':>{12 - len(precision)}} {m_rate:10.1f} images/s")
    print(f"(e) extract end to end:           {e_rate:10.1f} images/s")
    print(
        f"(e)/min(d, m) = {e_rate / min(d_rate, m_rate):.2f}   the wall: {wall}   "
        f"goal on one H200: (e) >= 10,000 images/s"
    )
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
