"""A no-change `extract` against the bare walk it is bound by, side by side in one run (issue 9).

On a store that is up to date with its source (e.g. one that `scripts/bench_scale.py --keep DIR`
built: DIR/srcN and DIR/storeN), runs in turn, each in a fresh process: a bare `os.scandir` +
`stat` walk of the source, a no-change `featurestore extract` with this checkout's code, and
the same command with the code of each `--baseline` checkout (another worktree, or a
`git archive` of main). Prints the fastest of `--repeat` runs of each (wall and CPU seconds,
peak RSS) and its ratio to the bare walk (goal >= 0.5), with the CPU model and load average.

    python scripts/bench_nochange.py DIR/src1000000 DIR/store1000000 [--baseline PATH] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from _common import SCANDIR_WALK, machine_line

REPO = Path(__file__).resolve().parent.parent

# Runs argv[2:] in a child (cwd: argv[1]) and prints its wall, CPU seconds and peak RSS.
CHILD = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    started = time.perf_counter()
    proc = subprocess.run(sys.argv[2:], cwd=sys.argv[1], capture_output=True, text=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "rc": proc.returncode,
        "out": (proc.stdout + proc.stderr)[-400:],
        "seconds": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }))
    """
)

WALK = "import sys\n" + SCANDIR_WALK + "print(walk(sys.argv[1]))\n"


def measure(cwd: Path, *command: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(cwd), *command], capture_output=True, text=True, check=True
    )
    result = json.loads(proc.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(command)} (in {cwd}) failed: {result['out']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("store", type=Path)
    parser.add_argument("--baseline", type=Path, action="append", default=[], help="another checkout's root")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    source, store = args.source.resolve(), args.store.resolve()
    extract = ["-m", "classifiers.cli", "extract", str(source), "--store", str(store)]
    extract += ["--weights", "imagenet"]
    codes = {"this checkout": REPO, **{f"baseline {path}": path.resolve() for path in args.baseline}}
    sys.path.insert(0, str(REPO))  # featurestore, for the machine line
    print(machine_line())
    for root in codes.values():  # up to date first, untimed: a no-change run is what is timed
        measure(root, sys.executable, *extract)
    runs: dict[str, list[dict]] = {"bare scandir+stat walk": [], **{label: [] for label in codes}}
    for _ in range(args.repeat):
        runs["bare scandir+stat walk"].append(measure(REPO, sys.executable, "-c", WALK, str(source)))
        for label, root in codes.items():
            runs[label].append(measure(root, sys.executable, *extract))
    best = {label: min(results, key=lambda r: r["cpu_s"]) for label, results in runs.items()}
    walk = best["bare scandir+stat walk"]
    print(f"no-change extract of {source} into {store}: fastest of {args.repeat} (by CPU), fresh processes")
    print("| run | wall s | CPU s | peak RSS MiB | bare walk / run: wall | CPU |")
    print("|---|---|---|---|---|---|")
    for label, r in best.items():
        print(
            f"| {label} | {r['seconds']:.2f} | {r['cpu_s']:.2f} | {r['rss_mib']:.0f} | "
            f"{walk['seconds'] / r['seconds']:.2f} | {walk['cpu_s'] / r['cpu_s']:.2f} |"
        )
    print(f"goal: bare walk / no-change extract >= 0.5; load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
