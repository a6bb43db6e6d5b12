"""What the nightly wrapper costs: a recorded extract (run record, live-id diff, drift check,
metrics file) against the bare `run_extract`, on the same night of real photos.

A store of --base photos per class is extracted once with the real ImageNet VGG16; each trial
copies it, adds --tonight new photos per class, and runs one variant on the copy. Both variants
share one loaded model (the recorded one through `recorded_extract(job=...)`, the hook the Ray
engine uses), so the difference is the wrapper. Variants alternate (bare, recorded, recorded,
bare, ...) so that a change in the machine's load hits both alike.

    FEATURESTORE_HOME=... python scripts/bench_nightly.py [--base 100] [--tonight 20] [--trials 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import copy_photos, machine_line

from featurestore.extract import ExtractConfig, run_extract
from featurestore.extractor import Extractor
from featurestore.quiet import quiet_tensorflow
from featurestore.recorded import RunOptions, recorded_extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=100, help="photos per class in the store")
    parser.add_argument("--tonight", type=int, default=20, help="new photos per class tonight")
    parser.add_argument("--trials", type=int, default=2, help="runs of each variant")
    parser.add_argument("--weights", default="imagenet")
    args = parser.parse_args()
    quiet_tensorflow()

    work = Path(tempfile.mkdtemp(prefix="bench_nightly_"))
    try:
        source = work / "images"
        copy_photos(source, args.base)
        extractor = Extractor(weights=args.weights, input_size=150, batch_size=32)
        base = work / "base"
        started = time.perf_counter()
        run_extract(ExtractConfig(source=source, store=base, progress=False), extractor)
        print(f"base store: {2 * args.base} photos in {time.perf_counter() - started:.1f} s")
        copy_photos(source, args.tonight, skip=args.base)

        def job(config: ExtractConfig):  # the loaded model, as the Ray engine passes its own job
            return run_extract(config, extractor)

        rows = []
        order = ["bare", "recorded", "recorded", "bare"] * ((args.trials + 1) // 2)
        for i, variant in enumerate(order[: 2 * args.trials]):
            store = work / f"store{i}"
            shutil.copytree(base, store, ignore=shutil.ignore_patterns(".lock", "runs"))
            config = ExtractConfig(source=source, store=store, progress=False)
            started = time.perf_counter()
            if variant == "bare":
                summary = run_extract(config, extractor)
                drift_seconds = None
                computed = summary.computed
            else:
                options = RunOptions(fail_on_drift=0.7, metrics_file=work / f"m{i}.prom")
                outcome = recorded_extract(config, options, job=job)
                drift_seconds = outcome.drift.seconds if outcome.drift else None
                computed = outcome.summary["computed"]
            rows.append((variant, time.perf_counter() - started, computed, drift_seconds))
            shutil.rmtree(store)

        print(machine_line())
        print(f"store {2 * args.base} photos, tonight {2 * args.tonight} new photos, 150 px, imagenet VGG16")
        print(f"{'variant':<10} {'wall s':>8} {'computed':>9} {'drift s':>8}")
        for variant, seconds, computed, drift in rows:
            print(f"{variant:<10} {seconds:>8.2f} {computed:>9} {'' if drift is None else f'{drift:.2f}':>8}")
        bare = [s for v, s, _, _ in rows if v == "bare"]
        recorded = [s for v, s, _, _ in rows if v == "recorded"]
        overhead = sum(recorded) / len(recorded) - sum(bare) / len(bare)
        print(
            f"mean bare {sum(bare) / len(bare):.2f} s, recorded {sum(recorded) / len(recorded):.2f} s: "
            f"wrapper {overhead:+.2f} s ({overhead / (sum(bare) / len(bare)):+.1%})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
