"""Random-kill soak (issue 14): N runs mixing `extract`, `extract --rebuild`, `train --overwrite`
and `export` on one store, each killed with SIGKILL at a random time (or let finish), while
reader processes open the store, load it and predict with the model throughout.

Every state any reader or check sees is compared with references computed once: each row's
maps must be those that a clean extraction gives its content (by image id, per input size).
Prints counts: unreadable states, wrong rows, leftovers, and what was killed where.

    python scripts/soak.py --runs 100            # about 20-30 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

SIZES = (32, 48)  # the two input sizes rebuilds switch between
# Batches of two: many partial batches and every image at both positions. Maps must then be
# bit-identical to the references' (computed at the same size) wherever an image sat.
BATCH = 2
OPS = {"extract": 0.35, "rebuild": 0.2, "train": 0.25, "export": 0.2}
CLASSES = ("cats", "dogs")


def cli(*args: Any) -> list[str]:
    return [sys.executable, "-m", "classifiers.cli", *map(str, args)]


def preload() -> None:
    """Import what the commands import, once, so that forked runs start at once. No model is
    built and no TensorFlow op runs here: the forked child starts TensorFlow's threads itself."""
    from featurestore.quiet import quiet_tensorflow

    quiet_tensorflow()
    import keras  # noqa: F401

    import classifiers.cli
    import classifiers.model_kinds
    import classifiers.training  # noqa: F401
    import featurestore.export
    import featurestore.extract
    import featurestore.verify  # noqa: F401


class Run:
    """One command in its own process: forked from this preloaded one (default), or a fresh
    interpreter (`--spawn`). Either way a real process, killed with a real SIGKILL."""

    def __init__(self, argv: list[Any], *, spawn: bool, log: Path) -> None:
        self.log = log
        if spawn:
            with open(log, "w") as err:
                self.pid = subprocess.Popen(cli(*argv), stdout=subprocess.DEVNULL, stderr=err).pid
            return
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the command, never return into the soak
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 2)
                os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                from classifiers.cli import main as command

                command.main(args=[str(a) for a in argv], prog_name="featurestore")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)

    def wait(self, timeout: float) -> int | None:
        """The exit status (negative: killed by that signal), or None if still running."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def kill(self) -> int:
        os.kill(self.pid, signal.SIGKILL)
        status = self.wait(60)
        assert status is not None
        return status

    def error(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""


def draw_pool(pool: Path, per_class: int) -> None:
    """Distinct tiny images per class; the source tree is always made of copies of these."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            rng = np.random.default_rng(1000 * c + i)
            pixels = rng.integers(0, 256, size=(32, 40, 3), dtype=np.uint8)
            (pool / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(pool / name / f"pool{i:02d}.png")


def references(pool: Path, work: Path, spawn: bool) -> dict[int, dict[str, np.ndarray]]:
    """Maps of every pool content per input size, from one clean extraction each: id -> maps."""
    from featurestore.store import open_store

    refs = {}
    for size in SIZES:
        store = work / f"reference{size}"
        args = [
            "extract",
            pool,
            "--store",
            store,
            "--weights",
            "random",
            "--input-size",
            size,
            "--batch-size",
            BATCH,
        ]
        run = Run(args, spawn=spawn, log=work / "reference.log")
        assert run.wait(1200) == 0, run.error()
        data = open_store(store).load()
        refs[size] = dict(zip(data.ids, data.features, strict=True))
    return refs


def check_rows(data: Any, refs: dict[str, np.ndarray]) -> int:
    """Rows whose maps are not those of their content, or whose label is not their folder's."""
    wrong = 0
    for image_id, path, label, maps in zip(data.ids, data.paths, data.labels, data.features, strict=True):
        expected = refs.get(image_id)
        folder_label = CLASSES.index(path.split("/")[0])
        if expected is None or not np.array_equal(maps, expected) or label != folder_label:
            wrong += 1
    return wrong


def read_once(store: Path, model: Path, refs: dict[int, dict[str, np.ndarray]], predict: bool) -> int:
    """One reader pass: open, load, compare; optionally predict with the model. Wrong rows."""
    from featurestore.store import open_store

    opened = open_store(store)
    data = opened.load()
    wrong = check_rows(data, refs[opened.fingerprint.input_size])
    if predict and (model / "metadata.json").exists():
        from classifiers.model_file import load_model
        from classifiers.prediction import predict_rows

        saved = load_model(model)
        if saved.fingerprint and saved.fingerprint["input_size"] == opened.fingerprint.input_size:
            rows = predict_rows(saved, store)
            assert len(rows) > 0
    return wrong


def reader(store: Path, model: Path, refs_file: Path, stop: Any, shared: Any, seed: int) -> None:
    """Read in a loop until told to stop; count reads, retries, unreadable states, wrong rows."""
    refs = {size: dict(np.load(refs_file / f"{size}.npz")) for size in SIZES}
    rng = random.Random(seed)
    counts = collections.Counter({"reads": 0, "retried": 0, "unreadable": 0, "wrong_rows": 0})
    while not stop.is_set():
        if not (store / "manifest.json").exists():
            time.sleep(0.05)
            continue
        try:
            wrong = read_once(store, model, refs, predict=rng.random() < 0.2)
        except Exception as first:  # a view opened before a rebuild switched: open it again
            try:
                wrong = read_once(store, model, refs, predict=False)
                counts["retried"] += 1
            except Exception as second:
                counts["unreadable"] += 1
                shared[seed] = dict(counts)
                print(f"reader: unreadable: {first!r} then {second!r}", file=sys.stderr)
                continue
        counts["reads"] += 1
        counts["wrong_rows"] += wrong
        shared[seed] = dict(counts)  # this reader's totals so far
        time.sleep(0.1)  # leave the cores to the runs


def mutate(images: Path, pool: Path, rng: random.Random) -> str:
    """Change the source between runs: add, remove or rewrite one image (a copy of pool content)."""
    name = rng.choice(CLASSES)
    present = sorted((images / name).glob("*.png"))
    what = rng.choice(["add", "remove", "rewrite"])
    if what == "remove" and len(present) > 4:
        rng.choice(present).unlink()
    elif what == "rewrite" and present:
        shutil.copyfile(rng.choice(sorted((pool / name).iterdir())), rng.choice(present))
    else:
        what = "add"
        shutil.copyfile(
            rng.choice(sorted((pool / name).iterdir())), images / name / f"img{rng.randrange(10**6):06d}.png"
        )
    return what


def leftovers(*folders: Path) -> list[str]:
    from featurestore.fsutil import stale_temps
    from featurestore.verify import leftover_notes

    found = [str(p) for folder in folders for p in stale_temps(folder)]
    store = folders[0]
    return found + (leftover_notes(store) if store.exists() else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    parser.add_argument(
        "--spawn", action="store_true", help="A fresh interpreter per run (slow) instead of a fork."
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    model_name = Path("/proc/cpuinfo").read_text().split("model name")[1].split(":")[1].split("\n")[0].strip()
    print(f"CPU: {model_name}; load average at start: {os.getloadavg()}")

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    pool, images, store = work / "pool", work / "images", work / "store"
    out_dir = work / "out"
    out_dir.mkdir()
    model, export = out_dir / "model", out_dir / "export.h5"
    draw_pool(pool, per_class=12)
    for name in CLASSES:
        (images / name).mkdir(parents=True)
        for path in sorted((pool / name).iterdir())[:6]:
            shutil.copyfile(path, images / name / path.name.replace("pool", "img"))
    started = time.monotonic()
    if not args.spawn:
        preload()
    refs = references(pool, work, args.spawn)
    refs_file = work / "refs"
    refs_file.mkdir()
    for size, maps in refs.items():
        np.savez(refs_file / f"{size}.npz", **maps)
    print(f"references: {sum(map(len, refs.values()))} rows in {time.monotonic() - started:.0f} s")

    context = mp.get_context("spawn")
    manager = context.Manager()
    shared = manager.dict()
    stop = context.Event()
    readers = [
        context.Process(target=reader, args=(store, model, refs_file, stop, shared, i))
        for i in range(args.readers)
    ]
    for process in readers:
        process.start()

    size = SIZES[0]
    durations: dict[str, list[float]] = collections.defaultdict(list)
    table: dict[tuple[str, str], int] = collections.Counter()
    checks = collections.Counter()
    for run in range(args.runs):
        op = rng.choices(list(OPS), weights=list(OPS.values()))[0]
        if op in ("extract", "rebuild"):
            checks[f"source {mutate(images, pool, rng)}"] += 1
        if op == "rebuild":
            size = rng.choice(SIZES)
        current = _store_size(store) or size
        argv = {
            "extract": [
                "extract",
                images,
                "--store",
                store,
                "--weights",
                "random",
                "--input-size",
                current,
                "--batch-size",
                BATCH,
                "--commit-every",
                2,
            ],
            "rebuild": [
                "extract",
                images,
                "--store",
                store,
                "--weights",
                "random",
                "--input-size",
                size,
                "--batch-size",
                BATCH,
                "--commit-every",
                2,
                "--rebuild",
            ],
            "train": [
                "train",
                store,
                "-c",
                "logreg",
                "-p",
                f"C={rng.choice([0.01, 0.1, 1.0])}",
                "-o",
                model,
                "--overwrite",
            ],
            "export": ["export", store, export],
        }[op]
        if op in ("train", "export") and not (store / "manifest.json").exists():
            op, argv = "extract", argv_extract(images, store, size)
        kill = rng.random() < 0.75
        typical = statistics.mean(durations[op]) if durations[op] else 15.0
        delay = rng.uniform(0.2, 1.1) * typical
        began = time.monotonic()
        process = Run(argv, spawn=args.spawn, log=work / "run.log")
        status = process.wait(delay if kill else 600)
        if status is None:
            status = process.kill()
        if status == -signal.SIGKILL:
            outcome = "killed"
        elif status == 0:
            outcome = "finished"
            durations[op].append(time.monotonic() - began)
        else:
            outcome = f"exit {status}"
            print(f"run {run} {op}: exit {status}: {process.error()}")
        table[(op, outcome)] += 1
        checks.update(_check_after(store, model, export, refs))
        seen = collections.Counter()
        for totals in shared.values():
            seen.update(totals)
        print(
            f"run {run + 1:3d} {op:8} {outcome:8} after {time.monotonic() - began:5.1f} s; so far: "
            f"unreadable {seen['unreadable'] + checks['unreadable']}, "
            f"wrong rows {seen['wrong_rows'] + checks['wrong_rows']}, reader passes {seen['reads']}",
            flush=True,
        )
    # The last word: one finished run of each writer, then nothing may be left over.
    for argv in (
        argv_extract(images, store, _store_size(store) or size),
        ["train", store, "-c", "logreg", "-o", model, "--overwrite"],
        ["export", store, export],
    ):
        final = Run(argv, spawn=args.spawn, log=work / "run.log")
        assert final.wait(1200) == 0, final.error()
    checks.update(_check_after(store, model, export, refs))
    stop.set()
    for process in readers:
        process.join()
    counts = collections.Counter()
    for totals in shared.values():
        counts.update(totals)
    left = leftovers(store, store / "runs", out_dir)

    print(f"\n{args.runs} runs in {time.monotonic() - started:.0f} s; load average at end: {os.getloadavg()}")
    print(f"{'command':10} {'killed':>7} {'finished':>9} {'other':>6}")
    for op in OPS:
        other = sum(
            n for (o, outcome), n in table.items() if o == op and outcome not in ("killed", "finished")
        )
        print(f"{op:10} {table[(op, 'killed')]:>7} {table[(op, 'finished')]:>9} {other:>6}")
    print(f"reader passes: {counts['reads']} (re-opened after a rebuild switched: {counts['retried']})")
    print(
        f"unreadable states: {counts['unreadable'] + checks['unreadable']} "
        f"(readers {counts['unreadable']}, checks after runs {checks['unreadable']})"
    )
    print(
        f"wrong rows: {counts['wrong_rows'] + checks['wrong_rows']} "
        f"(readers {counts['wrong_rows']}, checks after runs {checks['wrong_rows']})"
    )
    print(f"models missing or unreadable after a train was killed: {checks['model_bad']}")
    print(f"exports incomplete or wrong: {checks['export_bad']}")
    print(f"leftovers after the final runs: {len(left)}{(': ' + ', '.join(left)) if left else ''}")
    print(
        "source changes: "
        + ", ".join(f"{k.split()[1]} {v}" for k, v in sorted(checks.items()) if k.startswith("source"))
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder: {work}")


def argv_extract(images: Path, store: Path, size: int) -> list[Any]:
    return [
        "extract",
        images,
        "--store",
        store,
        "--weights",
        "random",
        "--input-size",
        size,
        "--batch-size",
        BATCH,
        "--commit-every",
        2,
    ]


def _store_size(store: Path) -> int | None:
    try:
        return int(json.loads((store / "manifest.json").read_text())["fingerprint"]["input_size"])
    except (OSError, ValueError, KeyError):
        return None


def _check_after(
    store: Path, model: Path, export: Path, refs: dict[int, dict[str, np.ndarray]]
) -> dict[str, int]:
    """After a run: the store opens, verifies and holds right rows; the model loads; the
    export is complete and right."""
    from classifiers.model_file import load_model
    from featurestore.store import open_store
    from featurestore.verify import verify_store

    result = collections.Counter()
    if (store / "manifest.json").exists():
        try:
            opened = open_store(store)
            findings, _ = verify_store(store)
            result["unreadable"] += bool(findings)
            data = opened.load()
            wrong = check_rows(data, refs[opened.fingerprint.input_size])
            result["wrong_rows"] += wrong
            if wrong:
                _explain(data, opened.fingerprint.input_size, refs, opened.generation)
        except Exception as exc:
            print(f"check: unreadable store: {exc!r}")
            result["unreadable"] += 1
    if _trained_once(model):
        try:
            load_model(model)
        except Exception as exc:
            print(f"check: model: {exc!r}")
            result["model_bad"] += 1
    if export.exists():
        try:
            with h5py.File(export) as f:
                size = json.loads(f.attrs["fingerprint"])["input_size"]
                ids, features = f["ids"][()].astype(str), f["features"][()]
            result["export_bad"] += sum(
                not np.array_equal(maps, refs[size].get(i, np.empty(0)))
                for i, maps in zip(ids, features, strict=True)
            )
        except Exception as exc:
            print(f"check: export: {exc!r}")
            result["export_bad"] += 1
    return result


def _explain(data: Any, size: int, refs: dict[int, dict[str, np.ndarray]], generation: int) -> None:
    """Say what is wrong with the first wrong rows (diagnostics)."""
    shown = 0
    for image_id, path, label, maps in zip(data.ids, data.paths, data.labels, data.features, strict=True):
        expected = refs[size].get(image_id)
        ok = expected is not None and np.array_equal(maps, expected)
        if ok and label == CLASSES.index(path.split("/")[0]):
            continue
        other = [s for s in SIZES if image_id in refs[s] and np.array_equal(maps, refs[s][image_id])]
        diff = float(np.abs(maps - expected).max()) if expected is not None else None
        known = [i for s in SIZES for i, m in refs[s].items() if np.array_equal(m, maps)]
        print(
            f"  wrong row at generation {generation}: {path} label {label} size {size} id {image_id[:12]} "
            f"maps ok {ok} (max diff {diff}); same as size {other}; maps of {[i[:12] for i in known]}"
        )
        shown += 1
        if shown == 3:
            return


_TRAINED: set[Path] = set()


def _trained_once(model: Path) -> bool:
    """Whether a model was ever under this name (from then on, one must always be)."""
    if (model / "metadata.json").exists():
        _TRAINED.add(model)
    return model in _TRAINED


if __name__ == "__main__":
    main()
