"""The store at scale: how each command's cost grows with the store's size and history.

Builds synthetic stores of N rows through the public write API (`write_piece`, `StoreWriter.commit`)
over real files (tiny, so the stat fast path is real; their sha256 is the row's id, so a touched
or copied file is re-hashed and its maps reused, never run through the model), then times each
command in a fresh process and reports its peak RSS:

- `featurestore info` (open + info), a no-change `featurestore extract`, a bare `os.scandir` +
  `stat` walk of the same files (the floor a no-change extract is bound by), a 1% change extract
  (0.5% touched, 0.25% deleted, 0.25% new copies), reading the train split against a plain
  sequential read of the pieces' bytes, `featurestore verify`, `featurestore compact`.
- 365 nights of 1% churn (1% deleted + 1% new rows a night) through the writer: pieces, manifest
  bytes, open time and split-read speed before and after `compact`.

    python scripts/bench_scale.py [--sizes 10000,100000,1000000] [--nights 365] [--churn-rows 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from _common import SCANDIR_WALK, machine_line

REPO = Path(__file__).resolve().parent.parent
PIECE_ROWS = 512
# 1 KiB float32 a row by default: index costs do not depend on map size (--map-shape 4,4,512 is
# VGG16's block5_pool at 150x150, 32 KiB a row, for split reads at the real size)
MAP_SHAPE = (2, 2, 64)
CLI = [sys.executable, "-m", "classifiers.cli"]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def step(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter; returns what it put in `result`, its seconds and peak RSS."""
    wrapper = textwrap.dedent(
        """
        import json, resource, sys, time
        started = time.perf_counter()
        result = {}
        exec(compile(sys.argv[1], "step", "exec"))
        result["seconds"] = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result.setdefault("cpu_s", usage.ru_utime + usage.ru_stime)
        result["rss_mib"] = usage.ru_maxrss / 1024
        print(json.dumps(result))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, code, *args], capture_output=True, text=True, cwd=REPO
    )
    if proc.returncode != 0:
        raise SystemExit(f"step failed:\n{code}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli_step(*args: str, check: bool = True) -> dict:
    """A real `featurestore` command in a fresh process: seconds, peak RSS, its output."""
    code = textwrap.dedent(
        """
        import subprocess, sys, resource
        proc = subprocess.run(sys.argv[2:], capture_output=True, text=True)
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        result["rc"] = proc.returncode
        result["out"] = (proc.stdout + proc.stderr)[-600:]
        result["child_rss_mib"] = child.ru_maxrss / 1024
        result["cpu_s"] = child.ru_utime + child.ru_stime
        """
    )
    result = step(code, *CLI, *args)
    result["rss_mib"] = result.pop("child_rss_mib")
    if check and result["rc"] != 0:
        raise SystemExit(f"featurestore {' '.join(args)} failed: {result['out']}")
    return result


# -- building a synthetic store -----------------------------------------------------------
def content(i: int) -> bytes:
    return f"synthetic image {i}\n".encode()


def relpath_of(i: int) -> str:
    label = "cat" if i % 2 == 0 else "dog"
    return f"{label}/d{i // 1000:04d}/i{i:07d}.jpg"


def make_source(root: Path, n: int, start: int = 0) -> list[tuple[str, int]]:
    """n tiny files under root/{cat,dog}/dNNNN/; returns (relpath, index) pairs."""
    made = []
    for i in range(start, start + n):
        rel = relpath_of(i)
        path = root / rel
        if i % 1000 == 0 or not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(i))
        made.append((rel, i))
    return made


def fingerprint():
    from featurestore.extractor import Extractor

    return Extractor(weights="imagenet").fingerprint


def build_store(store: Path, source: Path, files: list[tuple[str, int]], fp, map_shape=MAP_SHAPE) -> None:
    from featurestore.splits import SplitFractions, split_of
    from featurestore.writer import Row, StoreWriter

    fractions = SplitFractions()
    maps = np.full(map_shape, 0.5, np.float32)
    with StoreWriter(
        store, fingerprint=fp, split_fractions=fractions, source_root=str(source), class_names=("cat", "dog")
    ) as writer:
        pending = []
        for at in range(0, len(files), PIECE_ROWS):
            rows = []
            for rel, i in files[at : at + PIECE_ROWS]:
                st = os.stat(source / rel)
                image_id = hashlib.sha256(content(i)).hexdigest()
                rows.append(
                    Row(
                        relpath=rel,
                        image_id=image_id,
                        label=rel.split("/", 1)[0],
                        split=split_of(image_id, fractions),
                        size=st.st_size,
                        mtime_ns=st.st_mtime_ns,
                        maps={"features": maps},
                    )
                )
            pending.append(writer.write_piece(rows))
            if len(pending) == 64:
                writer.commit(pending)
                pending = []
        writer.commit(pending)


WALK = SCANDIR_WALK + 'result["files"] = walk(sys.argv[2])\n'

SPLIT_READ = """
from featurestore.store import open_store
t0 = time.perf_counter()
store = open_store(sys.argv[2])
t1 = time.perf_counter()
data = store.load("train")
t2 = time.perf_counter()
result["open_s"] = t1 - t0
result["load_s"] = t2 - t1
result["bytes"] = data.features.nbytes
result["rows"] = len(data)
"""

SEQUENTIAL_READ = """
import os
t0, c0 = time.perf_counter(), time.process_time()
total = 0
for name in sorted(os.listdir(sys.argv[2])):
    with open(os.path.join(sys.argv[2], name), "rb", buffering=0) as f:
        while chunk := f.read(1 << 24):
            total += len(chunk)
result["read_s"] = time.perf_counter() - t0
result["read_cpu_s"] = time.process_time() - c0
result["bytes"] = total
"""

# The fair baseline of a split read: as many bytes, read sequentially from the pieces, into one
# fresh numpy array of that size (what `load` returns: the same first-touch page faults, the
# same writes to memory). The 16 MiB buffer SEQUENTIAL_READ reuses stays in the CPU's caches.
SEQUENTIAL_INTO = """
import os
import numpy as np
want = int(sys.argv[3])
t0, c0 = time.perf_counter(), time.process_time()
out = np.empty(want, np.uint8)
view, at = memoryview(out), 0
for name in sorted(os.listdir(sys.argv[2])):
    with open(os.path.join(sys.argv[2], name), "rb", buffering=0) as f:
        while at < want and (got := f.readinto(view[at:])):
            at += got
    if at >= want:
        break
result["read_s"] = time.perf_counter() - t0
result["read_cpu_s"] = time.process_time() - c0
result["bytes"] = at
"""


def median_of(runs: list[dict], key: str) -> dict:
    """The run with the median `key` (seconds) of a few: one slow run on shared cores is not the figure."""
    return sorted(runs, key=lambda run: run[key])[len(runs) // 2]


def size_row(n: int, work: Path, fp, map_shape=MAP_SHAPE, keep: bool = False) -> dict:
    source, store = work / f"src{n}", work / f"store{n}"
    rng = np.random.default_rng(0)
    picks = rng.permutation(n)
    k = max(1, n // 400)
    if keep and (store / "manifest.json").is_file() and source.is_dir():
        # Built by an earlier --keep run: undo its 1% change, so that this run sees the same one.
        files = [(relpath_of(i), i) for i in range(n)]
        for j in picks[: 4 * k]:
            rel, i = files[j]
            (source / rel).write_bytes(content(i))
            (source / rel.replace(".jpg", "-copy.jpg")).unlink(missing_ok=True)
        built = float("nan")
    else:
        t = time.perf_counter()
        files = make_source(source, n)
        build_store(store, source, files, fp, map_shape)
        built = time.perf_counter() - t
    r: dict = {"rows": n, "build_s": built}
    # The first extract finds the store as the writer API left it (many small pieces): it may
    # compact it (the "after" code does, past its thresholds). Then the steady state is timed.
    r["first"] = cli_step("extract", str(source), "--store", str(store), "--weights", "imagenet", "--json")
    r["info"] = cli_step("info", str(store), "--json")
    r["extract0"] = cli_step("extract", str(source), "--store", str(store), "--weights", "imagenet", "--json")
    r["walk"] = step(WALK, str(source))
    # 1% change: 0.5% touched (same bytes, new mtime), 0.25% deleted, 0.25% new copies.
    for j in picks[: 2 * k]:
        rel, _ = files[j]
        os.utime(source / rel, ns=(time.time_ns(), time.time_ns()))
    for j in picks[2 * k : 3 * k]:
        (source / files[j][0]).unlink()
    for j in picks[3 * k : 4 * k]:
        rel, _i = files[j]
        shutil.copyfile(source / rel, source / rel.replace(".jpg", "-copy.jpg"))
    r["extract1"] = cli_step("extract", str(source), "--store", str(store), "--weights", "imagenet", "--json")
    r["split"] = step(SPLIT_READ, str(store))
    r["seq"] = step(SEQUENTIAL_READ, str(store / "pieces"))
    r["verify"] = cli_step("verify", str(store))
    r["compact"] = cli_step("compact", str(store), check=False)
    r["info_after"] = cli_step("info", str(store), "--json", check=False)
    if not keep:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
    return r


def mbs(result: dict, seconds_key: str) -> float:
    return result["bytes"] / max(result[seconds_key], 1e-9) / 1e6


def print_sizes(rows: list[dict]) -> None:
    print("\n## growth: wall seconds / CPU seconds (peak RSS MiB), fresh process each")
    print("(CPU = user + system time of the process: what the work costs when the shared cores are busy)")
    header = "| operation | " + " | ".join(f"{r['rows']:,} rows" for r in rows) + " |"
    print(header)
    print("|---" * (len(rows) + 1) + "|")

    def cell(d: dict) -> str:
        mark = "" if d.get("rc", 0) == 0 else " (failed)"
        return f"{d['seconds']:.2f} s / {d['cpu_s']:.2f} s ({d['rss_mib']:.0f} MiB){mark}"

    for label, key in [
        ("first `extract` after the build", "first"),
        ("open + `info`", "info"),
        ("no-change `extract`", "extract0"),
        ("bare scandir+stat walk", "walk"),
        ("1% change `extract`", "extract1"),
        ("`verify`", "verify"),
        ("`compact`", "compact"),
        ("`info` after compact", "info_after"),
    ]:
        print(f"| {label} | " + " | ".join(cell(r[key]) for r in rows) + " |")
    print(
        "| open_store + load('train') | "
        + " | ".join(
            f"{r['split']['open_s']:.2f} + {r['split']['load_s']:.2f} s ({r['split']['rss_mib']:.0f} MiB)"
            for r in rows
        )
        + " |"
    )
    print(
        "| split read MB/s / sequential MB/s | "
        + " | ".join(f"{mbs(r['split'], 'load_s'):.0f} / {mbs(r['seq'], 'read_s'):.0f}" for r in rows)
        + " |"
    )
    print("\n## goals")
    for r in rows:
        ratio = r["walk"]["seconds"] / r["extract0"]["seconds"]
        cpu_ratio = r["walk"]["cpu_s"] / r["extract0"]["cpu_s"]
        print(
            f"{r['rows']:>9,} rows: open+info {r['info']['seconds']:.2f} s wall, "
            f"{r['info']['cpu_s']:.2f} s CPU (goal < 2 s at 1M); bare walk / no-change extract "
            f"{ratio:.2f} wall, {cpu_ratio:.2f} CPU (goal >= 0.5)"
        )


# -- nightly churn ----------------------------------------------------------------------
CHURN_OPEN = """
from featurestore.store import open_store
t0 = time.perf_counter()
store = open_store(sys.argv[2])
result["open_s"] = time.perf_counter() - t0
t1, c1 = time.perf_counter(), time.process_time()
data = store.load("train")
result["load_s"] = time.perf_counter() - t1
result["load_cpu_s"] = time.process_time() - c1
result["bytes"] = data.features.nbytes
result["rows"] = len(store)
"""


def store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def churn_state(store: Path, reps: int = 3) -> dict:
    """The store's shape, and its train split read warm and cold against two sequential reads
    of the pieces: into a fresh array of the split's size (fair) and through a reused 16 MiB
    buffer (the stream). Each figure is the median of `reps` fresh processes."""
    from featurestore.format import read_manifest

    manifest = read_manifest(store)
    state = {
        "pieces": len(manifest.pieces),
        "rows_in_pieces": sum(p.rows for p in manifest.pieces),
        "deleted": len(manifest.deleted),
        "manifest_bytes": (store / "manifest.json").stat().st_size,
        "store_mib": store_bytes(store) / 2**20,
    }
    pieces = str(store / "pieces")
    step(SEQUENTIAL_READ, pieces)  # warm the page cache
    state.update(median_of([step(CHURN_OPEN, str(store)) for _ in range(reps)], "load_s"))
    split_bytes = str(state["bytes"])
    state["fresh"] = median_of([step(SEQUENTIAL_INTO, pieces, split_bytes) for _ in range(reps)], "read_s")
    state["seq"] = median_of([step(SEQUENTIAL_READ, pieces) for _ in range(reps)], "read_s")

    def cold(code: str, *args: str) -> dict:
        step(DROP_CACHED, pieces)  # the pieces' pages only (posix_fadvise DONTNEED)
        return step(code, *args)

    state["cold"] = median_of([cold(CHURN_OPEN, str(store)) for _ in range(reps)], "load_s")
    state["cold_fresh"] = median_of(
        [cold(SEQUENTIAL_INTO, pieces, split_bytes) for _ in range(reps)], "read_s"
    )
    state["cold_seq"] = median_of([cold(SEQUENTIAL_READ, pieces) for _ in range(reps)], "read_s")
    return state


DROP_CACHED = """
import os
for name in os.listdir(sys.argv[2]):
    fd = os.open(os.path.join(sys.argv[2], name), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
"""


def churn(work: Path, n: int, nights: int, fp, map_shape=MAP_SHAPE) -> None:
    from featurestore.splits import SplitFractions, split_of
    from featurestore.writer import Row, StoreWriter

    try:
        from featurestore.compact import maybe_compact  # the "after" code: extract's automatic policy
    except ImportError:
        maybe_compact = None
    store, fractions = work / "churn", SplitFractions()
    maps = np.full(map_shape, 0.5, np.float32)

    def row(i: int) -> Row:
        image_id = hashlib.sha256(content(i)).hexdigest()
        return Row(
            relpath=f"x/i{i:08d}.jpg",
            image_id=image_id,
            label="cat",
            split=split_of(image_id, fractions),
            size=20,
            mtime_ns=i,
            maps={"features": maps},
        )

    kwargs = dict(fingerprint=fp, split_fractions=fractions, source_root="/nowhere", class_names=("cat",))
    if "retain_seconds" in inspect.signature(StoreWriter).parameters:
        kwargs["retain_seconds"] = 0  # nights are a day apart: a one-day retention has passed
    with StoreWriter(store, **kwargs) as writer:
        for at in range(0, n, PIECE_ROWS):
            writer.commit_rows([row(i) for i in range(at, min(at + PIECE_ROWS, n))])
    live = list(range(n))
    nxt = n
    rng = np.random.default_rng(1)
    k = max(1, n // 100)
    night_seconds = []
    print(f"\n## {nights} nights of 1% churn on {n:,} rows ({k} deleted + {k} new a night)")
    print("| night | pieces | rows in pieces | deleted entries | manifest KB | writer s | store MiB |")
    print("|---|---|---|---|---|---|---|")
    for night in range(1, nights + 1):
        gone = set(rng.choice(len(live), size=k, replace=False).tolist())
        deleted = [f"x/i{live[j]:08d}.jpg" for j in gone]
        live = [v for j, v in enumerate(live) if j not in gone]
        new = list(range(nxt, nxt + k))
        nxt += k
        live.extend(new)
        t = time.perf_counter()
        with StoreWriter(store, **kwargs) as writer:
            for at in range(0, k, PIECE_ROWS):
                writer.commit_rows(
                    [row(i) for i in new[at : at + PIECE_ROWS]], deleted=deleted if at == 0 else ()
                )
            if maybe_compact is not None:
                maybe_compact(writer)
        night_seconds.append(time.perf_counter() - t)
        if night in (1, 30, 90, 180, 270, nights):
            m = json.loads((store / "manifest.json").read_bytes())
            print(
                f"| {night} | {len(m['pieces'])} | {sum(p['rows'] for p in m['pieces']):,} | "
                f"{len(m.get('deleted', {})):,} | {(store / 'manifest.json').stat().st_size / 1e3:.0f} | "
                f"{night_seconds[-1]:.2f} | {store_bytes(store) / 2**20:.0f} |"
            )
    before = churn_state(store)
    compacted = cli_step("compact", str(store), "--retain", "0s", check=False)
    after = churn_state(store)
    print(f"\ncompact: {compacted['seconds']:.2f} s, {compacted['rss_mib']:.0f} MiB, rc {compacted['rc']}")
    print(
        "\nsplit read: load('train') MB/s against a sequential read of the pieces (median of 3 fresh "
        "processes each):\n  fresh = as many bytes into one fresh array of the split's size (the fair "
        "baseline: the same page faults and writes to memory as load);\n  stream = every piece's "
        "bytes through one reused 16 MiB buffer (stays in the CPU caches, touches no new memory)"
    )
    print(
        f"| after {nights} nights | pieces | rows in pieces | deleted | manifest KB | store MiB | open s "
        "| load MB/s | fresh MB/s | ratio | stream MB/s | ratio "
        "| CPU MB/s: load / fresh | ratio "
        "| cold: load MB/s | cold: fresh MB/s | ratio | cold: stream MB/s | ratio |"
    )
    print("|---" * 19 + "|")
    for label, s in (("before compact", before), ("after compact", after)):
        split_mbs, fresh_mbs, seq_mbs = mbs(s, "load_s"), mbs(s["fresh"], "read_s"), mbs(s["seq"], "read_s")
        split_cpu, fresh_cpu = mbs(s, "load_cpu_s"), mbs(s["fresh"], "read_cpu_s")
        cold_mbs = mbs(s["cold"], "load_s")
        cold_fresh, cold_seq = mbs(s["cold_fresh"], "read_s"), mbs(s["cold_seq"], "read_s")
        print(
            f"| {label} | {s['pieces']} | {s['rows_in_pieces']:,} | {s['deleted']:,} | "
            f"{s['manifest_bytes'] / 1e3:.0f} | {s['store_mib']:.0f} | {s['open_s']:.2f} | "
            f"{split_mbs:.0f} | {fresh_mbs:.0f} | {split_mbs / fresh_mbs:.2f} | "
            f"{seq_mbs:.0f} | {split_mbs / seq_mbs:.2f} | "
            f"{split_cpu:.0f} / {fresh_cpu:.0f} | {split_cpu / fresh_cpu:.2f} | "
            f"{cold_mbs:.0f} | {cold_fresh:.0f} | {cold_mbs / cold_fresh:.2f} | "
            f"{cold_seq:.0f} | {cold_mbs / cold_seq:.2f} |"
        )
    ratio = mbs(after, "load_s") / mbs(after["fresh"], "read_s")
    cpu = mbs(after, "load_cpu_s") / mbs(after["fresh"], "read_cpu_s")
    cold = mbs(after["cold"], "load_s") / mbs(after["cold_fresh"], "read_s")
    print(
        f"goals: split read >= 0.80 of a sequential read of as many bytes after compact ({ratio:.2f} warm, "
        f"{cpu:.2f} CPU, {cold:.2f} cold; against the 16 MiB stream: "
        f"{mbs(after, 'load_s') / mbs(after['seq'], 'read_s'):.2f} warm, "
        f"{mbs(after['cold'], 'load_s') / mbs(after['cold_seq'], 'read_s'):.2f} cold); "
        f"manifest < 1 MB before ({before['manifest_bytes'] / 1e6:.2f} MB) and after "
        f"({after['manifest_bytes'] / 1e6:.2f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated row counts")
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--churn-rows", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="build the size stores in this folder, keep them, and reuse them next time (a 1M-row "
        "build takes long; later runs then time the commands only)",
    )
    parser.add_argument(
        "--map-shape",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=MAP_SHAPE,
        help="shape of each row's float32 maps, e.g. 4,4,512 (VGG16 at 150x150, 32 KiB a row)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    print(machine_line())
    print(f"maps {args.map_shape} float32, {4 * int(np.prod(args.map_shape)) / 1024:.0f} KiB a row")
    fp = fingerprint()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        rows = []
        for n in [int(s) for s in args.sizes.split(",") if s]:
            rows.append(size_row(n, args.keep or work, fp, args.map_shape, keep=args.keep is not None))
            print(
                f"built and measured {n:,} rows (build {rows[-1]['build_s']:.0f} s); load {load()}",
                flush=True,
            )
        if rows:
            print_sizes(rows)
        if args.nights:
            churn(work, args.churn_rows, args.nights, fp, args.map_shape)
    print(f"\nload average at end {load()}")


if __name__ == "__main__":
    main()
