"""Extraction throughput and precision, side by side in one run on the same real photos:

(a) what a user would write: keras.utils.image_dataset_from_directory(shuffle=False) +
    conv_base.predict into numpy + one h5py write;
(b) featurestore extract --precision float32 (discovery, read once + hash, decode workers,
    model, commits in a writer thread);
(b') featurestore extract --precision auto (mixed_bfloat16 where the CPU has avx512_bf16/amx_bf16
    or there is a GPU, else float32: then the same as (b));
(c) the Keras model alone (`predict_on_batch`, no padding or guard image) on random tensors in
    float32 (the ceiling of (b));
and heads' accuracy on bfloat16 maps vs float32 maps of the same photos (logistic regression
on average-pooled maps, the same 5 seeded stratified folds for both). Where bfloat16 is not
native it is emulated for that comparison (FEATURESTORE_NATIVE_BF16=1), which is slow.

Model construction and TensorFlow import are left out of every timing; each variant runs once
untimed on a few images first. Goals: (b)/(c) >= 0.97, (b)/(a) >= 1.0, (b')/(b) >= 1.8 where
bfloat16 is native (1.0 elsewhere), accuracy within 0.3 points.

    python scripts/bench_extract.py [--per-class 32] [--weights imagenet] [--batch-size 32]
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
from _common import copy_photos, machine_line


def user_baseline(
    source: Path, out: Path, weights_path: Path | None, size: int, batch_size: int
) -> tuple[np.ndarray, float]:
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


def timed_extract(source: Path, store: Path, extractor: object, **config: object) -> float:
    from featurestore import ExtractConfig, run_extract

    started = time.perf_counter()
    summary = run_extract(ExtractConfig(source=source, store=store, **config), extractor)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    assert summary.computed == summary.discovered, summary
    return summary.computed / seconds


def head_accuracy(store: Path, ids: list[str]) -> float:
    """5-fold accuracy of a logistic regression on average-pooled maps, rows in `ids` order."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import featurestore

    data = featurestore.open_store(store).load()
    order = {image_id: i for i, image_id in enumerate(data.ids)}
    rows = [order[i] for i in ids]
    x, y = data.features[rows].mean(axis=(1, 2)), data.labels[rows]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, x, y, cv=folds).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=32)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=150)
    args = parser.parse_args()

    import featurestore
    from featurestore.compute import run_precision
    from featurestore.extractor import Extractor
    from featurestore.weights import resolve_weights

    print(machine_line())
    weights_path = resolve_weights(args.weights)
    auto = run_precision("auto", Path("/nonexistent-new-store"), rebuild=False)
    common = dict(input_size=args.size, batch_size=args.batch_size, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = len(copy_photos(tmp / "images", args.per_class))
        copy_photos(tmp / "warm", 4)
        user_baseline(tmp / "warm", tmp / "warm.h5", weights_path, args.size, args.batch_size)
        _, a_seconds = user_baseline(tmp / "images", tmp / "a.h5", weights_path, args.size, args.batch_size)

        def extractor(precision: str) -> Extractor:
            e = Extractor(
                weights=args.weights, input_size=args.size, batch_size=args.batch_size, precision=precision
            )
            timed_extract(tmp / "warm", tmp / f"warm-{precision}.store", e, **common)
            return e

        float32 = extractor("float32")
        b_rate = timed_extract(tmp / "images", tmp / "b.store", float32, **common)
        auto_extractor = float32 if auto == "float32" else extractor(auto)
        b2_rate = timed_extract(tmp / "images", tmp / "b2.store", auto_extractor, **common)

        batch = np.random.default_rng(0).uniform(0, 255, (args.batch_size, args.size, args.size, 3))
        batch = batch.astype("float32")
        reps = max(1, n // args.batch_size)
        model = float32.model  # the Keras model itself: no padding, no guard image
        model.predict_on_batch(batch)
        started = time.perf_counter()
        for _ in range(reps):
            model.predict_on_batch(batch)
        c_rate = reps * args.batch_size / (time.perf_counter() - started)

        # bfloat16 maps of the same photos for the heads (emulated where not native).
        bf16_store = tmp / "b2.store"
        if auto != "mixed_bfloat16":
            os.environ["FEATURESTORE_NATIVE_BF16"] = "1"
            bf16 = Extractor(
                weights=args.weights,
                input_size=args.size,
                batch_size=args.batch_size,
                precision="mixed_bfloat16",
            )
            timed_extract(tmp / "images", tmp / "bf16.store", bf16, **common)
            bf16_store = tmp / "bf16.store"
        ids = sorted(featurestore.open_store(tmp / "b.store").load().ids)
        f32_maps = featurestore.open_store(tmp / "b.store").load()
        b16_maps = featurestore.open_store(bf16_store).load()
        order = {i: k for k, i in enumerate(b16_maps.ids)}
        x = f32_maps.features.reshape(len(f32_maps), -1)
        y = b16_maps.features[[order[i] for i in f32_maps.ids]].reshape(len(f32_maps), -1)
        cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        acc32, acc16 = head_accuracy(tmp / "b.store", ids), head_accuracy(bf16_store, ids)

    a_rate = n / a_seconds
    print(f"{n} photos at {args.size}x{args.size}, batch {args.batch_size}; auto -> {auto} here")
    print(f"(a)  user script (image_dataset_from_directory + predict + h5py): {a_rate:7.2f} images/s")
    print(f"(b)  featurestore extract --precision float32:                    {b_rate:7.2f} images/s")
    print(
        f"(b') featurestore extract --precision auto ({auto}):{'':>{14 - len(auto)}} {b2_rate:7.2f} images/s"
    )
    print(f"(c)  model alone on random tensors, float32:                      {c_rate:7.2f} images/s")
    print(
        f"(b)/(c) = {b_rate / c_rate:.3f} (goal >= 0.97)   (b)/(a) = {b_rate / a_rate:.2f}x (goal >= 1.0)   "
        f"(b')/(b) = {b2_rate / b_rate:.2f}x (goal >= 1.8 with native bf16, 1.0 without)"
    )
    emulated = "" if auto == "mixed_bfloat16" else " (bf16 emulated here)"
    print(f"bf16 vs float32 maps{emulated}: cosine mean {cos.mean():.6f} min {cos.min():.6f}")
    print(
        f"head accuracy (logreg, 5 folds, {n} photos): float32 {acc32:.4f}  bf16 {acc16:.4f}  "
        f"difference {100 * (acc16 - acc32):+.2f} points (goal >= -0.3)"
    )
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
