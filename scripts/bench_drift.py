"""Drift detector: power on shifted nights and false alarms on same-distribution nights.

Real photos through the real ImageNet VGG16: the pooled block5 features of every photo, and of
grayscale, rotated, darkened and blurred copies of a held-out subset, are computed once and cached
(an .npz beside --out). Then, for each scenario and each tonight size, many seeded trials draw a
"tonight" and an "earlier" sample and run `featurestore.drift.compare` on them:

  same        tonight and earlier are disjoint random draws of the untouched photos (false alarms)
  grayscale   tonight: grayscale copies of held-out photos
  rotated     tonight: held-out photos rotated 90 degrees
  dim         tonight: held-out photos at 60% brightness (a subtle shift)
  blur        tonight: held-out photos with a Gaussian blur of radius 2 (a subtle shift)
  other-class earlier: cats only; tonight: dogs
  mislabeled  tonight: dogs labelled as cats (a broken feed); earlier: both classes

Shifted scenarios run a quarter of --trials. Each row prints the overall AUC's median and 95th
percentile, the seconds per trial, and the share of nights flagged at each threshold (an AUC at
or over it in the overall or a per-class comparison, with p < alpha there).

    FEATURESTORE_HOME=... python scripts/bench_drift.py [--weights imagenet] [--trials 100]
    python scripts/bench_drift.py --scenarios same --trials 300 --sizes 10,20,50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DEFAULT_PHOTOS, REPO, machine_line
from PIL import Image, ImageEnhance, ImageFilter

from featurestore.drift import DEFAULT_ALPHA, DEFAULT_THRESHOLD, compare

SHIFTS = {
    "grayscale": lambda im: im.convert("L").convert("RGB"),
    "rotated": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "dim": lambda im: ImageEnhance.Brightness(im).enhance(0.6),
    "blur": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
}


def embed_paths(paths: list[Path], extractor, batch: int = 64) -> dict[str, np.ndarray]:
    """Average- and max-pooled block5 features of image files."""
    from featurestore.images import load_image

    avg, mx = [], []
    for start in range(0, len(paths), batch):
        pixels = np.stack([load_image(p, extractor.input_size) for p in paths[start : start + batch]])
        maps = extractor.embed(pixels)["features"]
        avg.append(maps.mean(axis=(1, 2)))
        mx.append(maps.max(axis=(1, 2)))
        print(f"  {min(start + batch, len(paths))}/{len(paths)}", flush=True)
    return {"avg": np.concatenate(avg), "max": np.concatenate(mx)}


def build_features(cache: Path, photos: Path, per_class: int, held_out: int, weights: str) -> None:
    """Pool every photo and the shifted copies of `held_out` photos per class; save to `cache`."""
    from featurestore.extractor import Extractor

    extractor = Extractor(weights=weights, input_size=150, batch_size=32)
    classes = sorted(p.name for p in photos.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((photos / name).iterdir())[:per_class]
        paths += files
        labels += [label] * len(files)
    labels_arr = np.array(labels)
    print(f"pooling {len(paths)} photos")
    base = embed_paths(paths, extractor)
    # Held out: the last `held_out` photos of each class; their shifted copies are the shifted nights.
    held = np.concatenate([np.flatnonzero(labels_arr == c)[-held_out:] for c in range(len(classes))])
    arrays = {f"plain_{k}": v for k, v in base.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for shift, transform in SHIFTS.items():
            shifted = []
            for i in held:
                with Image.open(paths[i]) as im:
                    out = Path(tmp) / f"{shift}_{i}.png"
                    transform(im.convert("RGB")).save(out)
                shifted.append(out)
            print(f"pooling {len(shifted)} {shift} copies")
            for k, v in embed_paths(shifted, extractor).items():
                arrays[f"{shift}_{k}"] = v
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, labels=labels_arr, held=held, classes=np.array(classes), **arrays)


def make_scenarios(data: np.lib.npyio.NpzFile, pool: str) -> dict:
    """name -> draw(n, rng) returning (earlier rows, labels, tonight rows, labels)."""
    labels, held = data["labels"], data["held"]
    plain = data[f"plain_{pool}"]
    rest = np.setdiff1d(np.arange(len(labels)), held)  # never shifted: the earlier nights

    def same(n, rng):
        order = rng.permutation(rest)
        return plain[order[n:]], labels[order[n:]], plain[order[:n]], labels[order[:n]]

    def shifted(shift):
        rows = data[f"{shift}_{pool}"]

        def draw(n, rng):
            pick = rng.choice(len(held), size=min(n, len(held)), replace=False)
            return plain[rest], labels[rest], rows[pick], labels[held][pick]

        return draw

    cats, dogs = rest[labels[rest] == 0], held[labels[held] == 1]

    def other_class(n, rng):
        pick = rng.choice(dogs, size=min(n, len(dogs)), replace=False)
        return plain[cats], labels[cats], plain[pick], labels[pick]

    def mislabeled(n, rng):
        pick = rng.choice(dogs, size=min(n, len(dogs)), replace=False)
        return plain[rest], labels[rest], plain[pick], np.zeros(len(pick), int)

    return {
        "same": same,
        **{shift: shifted(shift) for shift in SHIFTS},
        "other-class": other_class,
        "mislabeled": mislabeled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--held-out", type=int, default=100, help="photos per class that get shifted")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_drift")
    parser.add_argument("--features-only", action="store_true")
    parser.add_argument("--pool", choices=("avg", "max"), default="avg")
    parser.add_argument("--sizes", default="10,20,50,200", help="tonight sizes (images)")
    parser.add_argument("--trials", type=int, default=100, help="same-distribution trials per size")
    parser.add_argument("--scenarios", default=None, help="comma-separated subset (default: all)")
    parser.add_argument("--thresholds", default="0.6,0.65,0.75,0.8", help="AUC thresholds beside the default")
    args = parser.parse_args()
    cache = args.out / f"features_{args.per_class}_{args.held_out}.npz"
    if not cache.exists():
        started = time.perf_counter()
        build_features(cache, args.photos, args.per_class, args.held_out, args.weights)
        print(f"features cached in {cache} ({time.perf_counter() - started:.0f} s)")
    if args.features_only:
        return
    data = np.load(cache)
    scenarios = make_scenarios(data, args.pool)
    if args.scenarios:
        scenarios = {name: scenarios[name] for name in args.scenarios.split(",")}
    sizes = [int(s) for s in args.sizes.split(",")]
    thresholds = sorted({*(float(t) for t in args.thresholds.split(",")), DEFAULT_THRESHOLD})
    print(f"{machine_line()}; {len(data['labels'])} photos, pool {args.pool}, alpha {DEFAULT_ALPHA}")
    print(
        f"{'scenario':<12} {'n':>4} {'trials':>6} {'AUC median':>10} {'AUC p95':>8} {'s/trial':>7}  "
        + "  ".join(f"flag@{t:g}" for t in thresholds)
    )
    for name, draw in scenarios.items():
        trials = args.trials if name == "same" else max(10, args.trials // 4)
        for n in sizes:
            rng = np.random.default_rng(1000 + n)
            aucs, flags, started = [], np.zeros(len(thresholds)), time.perf_counter()
            for trial in range(trials):
                e, el, t, tl = draw(n, rng)
                report = compare(e, el, t, tl, ("cats", "dogs"), seed=trial, pool=args.pool)
                comparisons = [report.overall, *report.per_class]
                aucs.append(report.overall.auc)
                for i, th in enumerate(thresholds):
                    flags[i] += any(
                        c.auc is not None and c.auc >= th and c.p_value < c.alpha for c in comparisons
                    )
                assert report.drifted == any(c.drifted for c in comparisons)
            per_trial = (time.perf_counter() - started) / trials
            rates = [f"{f / trials:>{len(f'flag@{t:g}')}.0%}" for f, t in zip(flags, thresholds, strict=True)]
            print(
                f"{name:<12} {n:>4} {trials:>6} {np.median(aucs):>10.3f} {np.quantile(aucs, 0.95):>8.3f} "
                f"{per_trial:>7.2f}  " + "  ".join(rates),
                flush=True,
            )


if __name__ == "__main__":
    main()
