"""Incremental extraction: a full run, a no-change re-run, and a run with 1% new images.

Goals: the no-change re-run under 2% of the full run's time, the 1% run under 5%. Each run is
a fresh `featurestore extract` process, as a nightly scheduler would start it, so start-up
(TensorFlow import, model build) is counted.

    python scripts/bench_incremental.py [--per-class 1000] [--weights imagenet]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import copy_photos


def run(source: Path, store: Path, weights: str) -> tuple[float, dict]:
    command = [
        sys.executable,
        "-m",
        "classifiers.cli",
        "extract",
        str(source),
        "--store",
        str(store),
        "--weights",
        weights,
        "--json",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=1000, help="photos per class in all")
    parser.add_argument("--weights", default="imagenet")
    args = parser.parse_args()
    held_back = max(1, args.per_class // 100)  # 1% of the images arrive later
    with tempfile.TemporaryDirectory() as tmp:
        source, store = Path(tmp) / "images", Path(tmp) / "store"
        copy_photos(source, args.per_class - held_back)
        full, s_full = run(source, store, args.weights)
        same, s_same = run(source, store, args.weights)
        copy_photos(source, held_back, skip=args.per_class - held_back)
        grown, s_grown = run(source, store, args.weights)
    print(f"full run:      {full:7.1f} s  ({s_full['new']} images, {s_full['computed']} through the model)")
    print(f"no change:     {same:7.1f} s  = {100 * same / full:.2f}% of full (goal < 2%)")
    print(f"+1% new:       {grown:7.1f} s  = {100 * grown / full:.2f}% of full (goal < 5%)")
    print(f"counts: no change {s_same['unchanged']} unchanged; +1% run {s_grown['new']} new")


if __name__ == "__main__":
    main()
