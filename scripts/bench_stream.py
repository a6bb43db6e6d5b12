"""Training on a store larger than memory: peak RSS of a streamed `train`, and a Keras head's
throughput from the stream against in memory, side by side in one run.

Goals (issue 9): `train --classifier logreg` on a store whose maps are 4x the memory it may use
completes with peak RSS under 2 GB; a Keras head trains from the stream at >= 70% of the
in-memory speed.

1. A synthetic store of (4, 4, 512) float32 maps (32 KiB a row) is written through the public
   writer API (`StoreWriter.write_piece` / `commit`), `--store-gib` GiB of them.
2. `featurestore train STORE --classifier logreg` runs as a child process under an address-space
   limit (RLIMIT_AS) of a quarter of the store's bytes: `train` sees the limit, streams by
   itself (its one line is printed), and the child's peak RSS comes from `getrusage`. The same
   command on a 1/8 slice of the store, without a limit and with `--no-stream`, shows what the
   in-memory path holds.
3. `featurestore train STORE --classifier gap` on a smaller store, `--no-stream` then `--stream`
   (same epochs, same seed): training rows per second of each fit (the streamed fit includes
   its copy of the split and its validation reads) and their ratio.

    python scripts/bench_stream.py [--store-gib 6] [--keras-rows 20000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from featurestore.fingerprint import Fingerprint
from featurestore.splits import SplitFractions, split_of
from featurestore.writer import Row, StoreWriter

SHAPE = (4, 4, 512)
ROW_BYTES = int(np.prod(SHAPE)) * 4
CLASSES = ("cats", "dogs")
PIECE_ROWS = 4096


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build_store(path: Path, rows: int, seed: int) -> float:
    """`rows` ReLU-like maps whose class shifts 32 channels; pieces of PIECE_ROWS rows."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    fingerprint = Fingerprint(weights_sha256="0" * 64, input_size=150)
    fractions = SplitFractions()
    with StoreWriter(
        path, fingerprint=fingerprint, split_fractions=fractions, source_root="", class_names=CLASSES
    ) as writer:
        pieces = []
        for start in range(0, rows, PIECE_ROWS):
            n = min(PIECE_ROWS, rows - start)
            labels = rng.integers(0, 2, size=n)
            maps = rng.standard_normal((n, *SHAPE), dtype=np.float32)
            np.maximum(maps, 0, out=maps)
            maps[:, :, :, :32] += 0.35 * labels[:, None, None, None]
            batch = []
            for i in range(n):
                image_id = hashlib.sha256(f"{seed}-{start + i}".encode()).hexdigest()
                batch.append(
                    Row(
                        relpath=f"{CLASSES[labels[i]]}/{start + i:08d}.jpg",
                        image_id=image_id,
                        label=CLASSES[labels[i]],
                        split=split_of(image_id, fractions),
                        size=0,
                        mtime_ns=0,
                        maps={"features": maps[i]},
                    )
                )
            pieces.append(writer.write_piece(batch))
        writer.commit(pieces)
    return time.perf_counter() - started


def _limit(address_space: int | None) -> Callable[[], None]:
    def apply() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, resource.RLIM_INFINITY))

    return apply


#: The child runs the CLI and reports its own peak RSS on the way out (click exits by SystemExit).
CHILD = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('peak-rss-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
    " file=sys.stderr))\n"
    "from classifiers.cli import main\n"
    "main(sys.argv[1:], prog_name='featurestore')\n"
)


def train(store: Path, out: Path, args: list[str], limit: int | None = None) -> dict:
    """Run `featurestore train` in a child; its report, 'streaming' line, wall time, peak RSS."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FEATURESTORE_MEMORY_AVAILABLE", "FEATURESTORE_STREAM")
    }
    command = [sys.executable, "-c", CHILD, "train", str(store), "-o", str(out), "--json", *args]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, preexec_fn=_limit(limit), check=False
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"train failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    lines = result.stderr.splitlines()
    peak = next(int(line.split()[1]) for line in lines if line.startswith("peak-rss-kib"))
    said = [line for line in lines if line.startswith("streaming")]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {"report": report, "said": said, "seconds": seconds, "peak_kib": peak}


def slice_store(src: Path, dest: Path, fraction: int) -> None:
    """A store naming copies of the first 1/`fraction` of `src`'s pieces (same rows and maps)."""
    from featurestore import open_store

    store = open_store(src)
    pieces = store.manifest.pieces[: max(1, len(store.manifest.pieces) // fraction)]
    with StoreWriter(
        dest,
        fingerprint=store.fingerprint,
        split_fractions=store.split_fractions,
        source_root="",
        class_names=CLASSES,
    ) as writer:
        for piece in pieces:
            shutil.copyfile(src / piece.file, dest / piece.file)
        writer.commit(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store-gib", type=float, default=6.0, help="size of the large store's maps")
    parser.add_argument("--keras-rows", type=int, default=20000, help="rows of the Keras store")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--limit-gib",
        type=float,
        default=None,
        help="RLIMIT_AS of the logreg run (default: a quarter of the store)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="build stores here and keep them")
    options = parser.parse_args()

    print(machine_line())
    work = options.keep or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        run(work, options)
    finally:
        if options.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {load()}")


def run(work: Path, options: argparse.Namespace) -> None:
    rows = int(options.store_gib * (1 << 30) // ROW_BYTES)
    big = work / "big.store"
    if not big.exists():
        seconds = build_store(big, rows, seed=1)
        print(
            f"built {big}: {rows} rows of {SHAPE} float32 maps, "
            f"{rows * ROW_BYTES / 2**30:.2f} GiB in {seconds:.0f} s"
        )
    limit = int(options.limit_gib * (1 << 30)) if options.limit_gib else rows * ROW_BYTES // 4
    streamed = train(big, work / "m1", ["--classifier", "logreg"], limit=limit)
    small = work / "eighth.store"
    if not small.exists():
        slice_store(big, small, 8)
    in_memory = train(small, work / "m2", ["--classifier", "logreg", "--no-stream"])

    keras_store = work / "keras.store"
    if not keras_store.exists():
        build_store(keras_store, options.keras_rows, seed=2)
    head = ["--classifier", "gap", "-p", f"epochs={options.epochs}", "-p", "patience=100"]
    keras_memory = train(keras_store, work / "k1", [*head, "--no-stream"])
    keras_stream = train(keras_store, work / "k2", [*head, "--stream"])

    def rate(result: dict, copy: bool = True) -> float:
        """Training rows per second of fit time (without the stream's one-time copy: `copy` False)."""
        report = result["report"]
        seconds = report["fit_seconds"] - (0 if copy else report["training"].get("stream_copy_seconds", 0))
        return report["counts"]["train"] * report["training"]["epochs_run"] / seconds

    print()
    print("| run | store | train rows | streamed | wall s | fit s | peak RSS | test accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in (
        (f"logreg, RLIMIT_AS {limit / 2**30:.2f} GiB", streamed),
        ("logreg, 1/8 slice, --no-stream", in_memory),
        (f"gap head {options.epochs} epochs, --no-stream", keras_memory),
        (f"gap head {options.epochs} epochs, --stream", keras_stream),
    ):
        report = result["report"]
        total = sum(report["counts"].values())
        size = f"{total * ROW_BYTES / 2**30:.2f} GiB"
        print(
            f"| {name} | {size} | {report['counts']['train']} | {report['training']['streamed']} | "
            f"{result['seconds']:.1f} | {report['fit_seconds']:.1f} | {result['peak_kib'] / 2**20:.2f} GiB | "
            f"{report['metrics']['test']['accuracy']:.4f} |"
        )
    print()
    print(f"streamed logreg said: {streamed['said'][0] if streamed['said'] else '(nothing: did not stream)'}")
    ratio_store = rows * ROW_BYTES / limit
    peak = streamed["peak_kib"] / 2**20
    print(
        f"goal: logreg on a store {ratio_store:.1f}x its memory limit, peak RSS {peak:.2f} GiB "
        f"(< 2 GB: {'yes' if peak * 2**30 < 2e9 else 'NO'})"
    )
    copy = keras_stream["report"]["training"]["stream_copy_seconds"]
    epochs_ratio = rate(keras_stream, copy=False) / rate(keras_memory)
    verdict = "yes" if epochs_ratio >= 0.70 else "NO"
    print(
        f"goal: gap head epochs from the stream {rate(keras_stream, copy=False):.0f} rows/s vs in memory "
        f"{rate(keras_memory):.0f} rows/s: {epochs_ratio:.2f}x (>= 0.70: {verdict})"
    )
    ratio = rate(keras_stream) / rate(keras_memory)
    wall = keras_memory["seconds"] / keras_stream["seconds"]
    print(
        f"      counting the stream's one-time copy of train+validation ({copy:.1f} s) in its fit: "
        f"{ratio:.2f}x; whole `train` commands (the in-memory one loads its splits): {wall:.2f}x"
    )


if __name__ == "__main__":
    main()
