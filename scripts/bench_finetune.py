"""Fine-tuning from images vs from cached block4_pool maps, side by side, on the real photos.

1. copy `--per-class` photos of each class and extract them at `--input-size` into a store that
   also keeps the block4_pool maps, those of the flipped images and of `--views K` augmented
   views (timed: the one-time cost of the cache);
2. train the classic dense head on the store (the warm start both runs share);
3. fine-tune block5 + head from the images (flips, rotations, zooms, shifts) and from the cache
   (each epoch one of each image's stored maps: its own, its flipped image's, its K views'),
   with the same epochs, learning rate and batch size;
4. print per-epoch time (the first epoch includes tracing, so the mean of the others is the
   figure to compare) and accuracy on validation and test next to the head's own.

Goal: the cache path at least 3x faster per epoch at equal accuracy. On 2 CPU cores an epoch
from images over the full 2,000 photos takes minutes; use small settings there:

    python scripts/bench_finetune.py [--per-class 1000] [--epochs 10] [--weights imagenet]
        [--input-size 150|224] [--views 0] [--batch-size 20] [--lr 1e-5] [--patience 5]
        [--no-augment] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import copy_photos, machine_line


def prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path, float]:
    """The store (with block4 maps, flipped and augmented views), the dense head, extraction
    seconds."""
    from classifiers.training import train_from_store
    from featurestore import ExtractConfig, run_extract

    copy_photos(work / "images", args.per_class)
    started = time.perf_counter()
    summary = run_extract(
        ExtractConfig(
            source=work / "images",
            store=work / "store",
            weights=args.weights,
            input_size=args.input_size,
            extra_layers=("block4_pool",),
            flip_views=True,
            views=args.views,
            progress=False,
        )
    )
    extract_seconds = time.perf_counter() - started
    print(f"extract (block5 + block4 maps, original + flipped + {args.views} views): {summary.line()}")
    head = train_from_store(work / "store", "dense", work / "head", overwrite=True)
    print(f"dense head: {head.summary().splitlines()[0]}")
    return work / "store", work / "head", extract_seconds


def finetune(store: Path, head: Path, out: Path, args: argparse.Namespace, from_cache: bool) -> dict:
    from classifiers.finetune.config import FinetuneConfig
    from classifiers.finetune.job import run_finetune

    config = FinetuneConfig(
        store=store,
        head=head,
        out=out,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        patience=args.patience,
        augment=args.augment,
        from_cache=from_cache,
        weights=args.weights,
        overwrite=True,
    )
    report = run_finetune(config, log=lambda line: print(f"  {'cache ' if from_cache else 'images'} {line}"))
    return report.to_dict()


def row(name: str, report: dict) -> str:
    seconds = report["training"]["epoch_seconds"]
    later = seconds[1:] or seconds
    val, test = (report["metrics"].get(s, {}).get("accuracy", float("nan")) for s in ("validation", "test"))
    head_val, head_test = (
        report["head_metrics"].get(s, {}).get("accuracy", float("nan")) for s in ("validation", "test")
    )
    return (
        f"{name:<8} {len(seconds):>6} {seconds[0]:>14.1f} {sum(later) / len(later):>13.1f} "
        f"{val:>8.4f} {test:>9.4f}   {head_val:.4f} / {head_test:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--input-size", type=int, choices=(150, 224), default=150)
    parser.add_argument("--views", type=int, default=0, help="Augmented views per image the cache keeps.")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it (default: a temp folder).")
    args = parser.parse_args()

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        work = args.keep or Path(tmp)
        store, head, extract_seconds = prepare(work, args)
        reports = {
            "images": finetune(store, head, work / "ft_images", args, from_cache=False),
            "cache": finetune(store, head, work / "ft_cache", args, from_cache=True),
        }
    print(
        f"\n{2 * args.per_class} photos at {args.input_size} px, {args.epochs} epochs at most, "
        f"batch {args.batch_size}, lr {args.lr}, augment {args.augment}; one-time extraction "
        f"with block4 + flipped + {args.views} views: {extract_seconds:.1f} s"
    )
    print(machine_line())
    print(
        f"{'path':<8} {'epochs':>6} {'first epoch s':>14} {'mean epoch s':>13} {'val acc':>8} {'test acc':>9}"
        "   head alone val / test"
    )
    for name, report in reports.items():
        print(row(name, report))
    mean = {
        name: r["training"]["epoch_seconds"][1:] or r["training"]["epoch_seconds"]
        for name, r in reports.items()
    }
    speedup = (sum(mean["images"]) / len(mean["images"])) / (sum(mean["cache"]) / len(mean["cache"]))
    print(f"cache speed-up per epoch (epochs after the first): {speedup:.1f}x")
    settings = {"input_size": args.input_size, "views": args.views, "augment": args.augment}
    print(json.dumps({**settings, "extract_seconds": extract_seconds, "speedup": speedup, **reports}))


if __name__ == "__main__":
    main()
