"""Extraction throughput, side by side in one run on the same real photos:

(a) what a user would write: keras.utils.image_dataset_from_directory(shuffle=False) +
    conv_base.predict into numpy + one h5py write;
(b) featurestore extract (discovery, hashing, decode workers, model, atomic commits);
(c) the model alone on random tensors (the ceiling).

Model construction and TensorFlow import are left out of every timing; each variant runs once
untimed on a few images first to warm up. Goal on the CPU: (b) at least 1.5x (a).

    python scripts/bench_extract.py [--per-class 100] [--weights imagenet] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py
import numpy as np
from _common import copy_photos


def user_baseline(
    source: Path, out: Path, weights_path: Path | None, size: int, batch_size: int
) -> np.ndarray:
    import keras

    conv_base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(size, size, 3))
    if weights_path is not None:
        conv_base.load_weights(weights_path)
    ds = keras.utils.image_dataset_from_directory(
        source, image_size=(size, size), batch_size=batch_size, shuffle=False, verbose=False
    )
    ds = ds.map(lambda x, y: keras.applications.vgg16.preprocess_input(x))
    started = time.perf_counter()
    features = conv_base.predict(ds, verbose=0)
    with h5py.File(out, "w") as f:
        f.create_dataset("features", data=features)
    return features, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=150)
    args = parser.parse_args()

    from featurestore import ExtractConfig, run_extract
    from featurestore.extractor import Extractor
    from featurestore.weights import resolve_weights

    weights_path = resolve_weights(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = len(copy_photos(tmp / "images", args.per_class))
        copy_photos(tmp / "warm", 4)
        user_baseline(tmp / "warm", tmp / "warm.h5", weights_path, args.size, args.batch_size)
        _, a_seconds = user_baseline(tmp / "images", tmp / "a.h5", weights_path, args.size, args.batch_size)

        extractor = Extractor(weights=args.weights, input_size=args.size, batch_size=args.batch_size)
        config = dict(input_size=args.size, batch_size=args.batch_size, progress=False)
        run_extract(ExtractConfig(source=tmp / "warm", store=tmp / "warm.store", **config), extractor)
        started = time.perf_counter()
        summary = run_extract(
            ExtractConfig(source=tmp / "images", store=tmp / "b.store", **config), extractor
        )
        b_seconds = time.perf_counter() - started
        assert summary.computed == n, summary

        batch = (
            np.random.default_rng(0)
            .uniform(0, 255, (args.batch_size, args.size, args.size, 3))
            .astype("float32")
        )
        extractor.embed(batch)
        reps = max(1, n // args.batch_size)
        started = time.perf_counter()
        for _ in range(reps):
            extractor.embed(batch)
        c_rate = reps * args.batch_size / (time.perf_counter() - started)

    a_rate, b_rate = n / a_seconds, n / b_seconds
    print(f"{n} photos at {args.size}x{args.size}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"(a) user script (image_dataset_from_directory + predict + h5py): {a_rate:7.1f} images/s")
    print(f"(b) featurestore extract:                                        {b_rate:7.1f} images/s")
    print(f"(c) model alone on random tensors:                               {c_rate:7.1f} images/s")
    print(f"(b)/(a) = {b_rate / a_rate:.2f}x (goal >= 1.5x)   (b)/(c) = {b_rate / c_rate:.2f}")


if __name__ == "__main__":
    main()
