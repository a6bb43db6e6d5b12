"""`bench --engine ray`: the cells as tasks on a real local Ray cluster give the local figures."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from classifiers.bench import runner
from classifiers.bench.config import BenchConfig
from tests.classifiers.bench.conftest import CHEAP

if os.environ.get("CI"):  # CI installs the ray extra: a missing Ray fails there, never skips
    import ray
else:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")


@pytest.fixture
def cluster() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_cells_give_the_local_figures_and_the_driver_keeps_the_cache(
    cluster: None, tiny_store: Path, tmp_path: Path
) -> None:
    results = {}
    for engine in ("local", "ray"):
        config = BenchConfig(
            store=tiny_store, out=tmp_path / engine, classifiers=CHEAP, folds=3, progress=False, engine=engine
        )
        results[engine] = runner.run_benchmark(config)
    local, on_ray = results["local"], results["ray"]
    assert on_ray.cells_total == local.cells_total > 0 and on_ray.cells_reused == 0
    figures = {e: {r.name: [c["metrics"] for c in r.folds] for r in res.rows} for e, res in results.items()}
    assert figures["ray"] == figures["local"]
    assert [r.name for r in on_ray.rows] == [r.name for r in local.rows]
    cells = sorted((tmp_path / "ray" / "cells").glob("*.json"))  # written by the driver
    assert len(cells) == on_ray.cells_total
    assert {json.loads(p.read_text())["variant"] for p in cells} == set(CHEAP)
    again = runner.run_benchmark(
        BenchConfig(
            store=tiny_store, out=tmp_path / "ray", classifiers=CHEAP, folds=3, progress=False, engine="ray"
        )
    )
    assert again.cells_reused == again.cells_total  # the cache stays with the driver
