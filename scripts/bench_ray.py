"""Local engine vs Ray engine on the same real photos and real weights, side by side in one run.

Both extract the same photos into fresh stores. The local engine gets an extractor whose model
is already built (its start-up is not timed); the Ray engine starts a local cluster first (not
timed either), then its run's start-up (model actors importing TensorFlow and building the
model) is reported on its own and left out of its steady throughput. Goal on one node: Ray's
steady throughput >= 0.85x the local engine's. Also checks that the features are identical.

    python scripts/bench_ray.py [--per-class 200] [--weights imagenet] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from _common import copy_photos, machine_line


def stage_line(stages: dict) -> str:
    keep = ("decode", "model", "write", "driver", "commit")
    rates = {name: stages.get(name, {}).get("images_per_s") for name in keep}
    return ", ".join(f"{name} {rate:.1f}/s" for name, rate in rates.items() if rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="float32", help="the same for both engines")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray cluster")
    args = parser.parse_args()

    import ray

    from featurestore import ExtractConfig, run_extract
    from featurestore.extractor import Extractor
    from featurestore.store import open_store
    from featurestore.weights import resolve_weights

    weights = str(resolve_weights(args.weights) or args.weights)
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        source = Path(tmp) / "photos"
        n = len(copy_photos(source, args.per_class))
        common = {
            "source": source,
            "weights": weights,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "progress": False,
        }
        extractor = Extractor(weights=weights, batch_size=args.batch_size, precision=args.precision)
        extractor.embed(np.zeros((1, 150, 150, 3), np.float32))  # build and trace: not timed
        local = run_extract(ExtractConfig(store=Path(tmp) / "local", **common), extractor)

        started = time.perf_counter()
        # Ray starts its workers at nice 15 (its daemons stay responsive); on a machine shared
        # with other jobs that alone would cost them most of their share against the local
        # engine's nice-0 threads. Same priority for both, so the ratio compares the engines.
        os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False)
        cluster_seconds = time.perf_counter() - started
        on_ray = run_extract(ExtractConfig(store=Path(tmp) / "ray", engine="ray", **common))
        ray.shutdown()

        a, b = open_store(Path(tmp) / "local").load(), open_store(Path(tmp) / "ray").load()
        by_path = dict(zip(a.paths, a.features, strict=True))
        same_rows = sorted(a.paths) == sorted(b.paths)
        differ = [
            p for p, f in zip(b.paths, b.features, strict=True) if not np.array_equal(by_path.get(p), f)
        ]
        identical = same_rows and not differ
        worst = max(
            (
                float(np.abs(by_path[p] - f).max())
                for p, f in zip(b.paths, b.features, strict=True)
                if p in by_path
            ),
            default=0.0,
        )

    startup = on_ray.stages["startup"]["seconds"]
    local_rate = local.computed / local.seconds
    ray_rate = on_ray.computed / (on_ray.seconds - startup)
    print(f"{n} photos, weights {args.weights}, batch {args.batch_size}, {args.cpus} Ray CPUs")
    header = f"{'engine':<8} {'wall s':>7} {'start-up s':>10} {'images/s':>9}"
    print(f"{header}  per stage (images/s of one worker)")
    print(f"{'local':<8} {local.seconds:>7.1f} {0.0:>10.1f} {local_rate:>9.2f}  {stage_line(local.stages)}")
    print(f"{'ray':<8} {on_ray.seconds:>7.1f} {startup:>10.1f} {ray_rate:>9.2f}  {stage_line(on_ray.stages)}")
    print(f"local Ray cluster start (ray.init): {cluster_seconds:.1f} s, not in the Ray run's wall time")
    print(f"steady throughput ratio ray/local: {ray_rate / local_rate:.2f} (goal >= 0.85)")
    print(f"end-to-end ratio (start-up included): {local.seconds / on_ray.seconds:.2f}")
    print(
        f"features identical: {identical} (rows {len(a.paths)} local, {len(b.paths)} ray; "
        f"{len(differ)} differ, largest difference {worst:.3g})"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
