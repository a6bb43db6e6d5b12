"""`featurestore bench --engine ray`: the benchmark's cells as Ray tasks on a cluster.

The driver keeps the cell cache: it plans the cells, skips the cached ones, and writes each
finished cell's file itself (workers may not see the output folder). The arrays go to the
object store once; every task fits one cell with `run_cell`, the same function and the same
thread limit as a local run with the same --jobs, so the figures are the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from classifiers.bench.cells import CellTask, run_cell
from featurestore.fsutil import atomic_write_json
from featurestore.ray_engine import connect, import_ray


def _fit(
    task: CellTask, arrays: tuple[np.ndarray, ...], class_names: tuple[str, ...], threads: int | None
) -> Any:
    X, y, X_test, y_test, *mirrors = arrays  # mirrors: flipped and augmented views' maps, or None
    return run_cell(task, X, y, X_test, y_test, class_names, threads, *mirrors, save=False)


@contextlib.contextmanager
def run_cells_on_ray(
    pending: list[CellTask],
    arrays: tuple[np.ndarray, ...],
    class_names: tuple[str, ...],
    threads: int | None,
    address: str | None,
) -> Iterator[Iterator[dict[str, Any]]]:
    """The finished cells as they come back (each saved by the driver first). Unfinished tasks
    are cancelled on the way out (an error, SIGTERM, Ctrl-C); a cluster started here stops."""
    ray = import_ray()
    cluster = connect(address)
    shared = ray.put(arrays)  # one copy per node, read zero-copy by every task there
    fit = ray.remote(num_cpus=1, max_retries=3)(_fit)
    refs = [fit.remote(task, shared, class_names, threads) for task in pending]
    by_ref = dict(zip(refs, pending, strict=True))

    def finished() -> Iterator[dict[str, Any]]:
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            cell = ray.get(ready[0])
            atomic_write_json(by_ref[ready[0]].path, cell)
            yield cell

    try:
        yield finished()
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if cluster.started_here:
            ray.shutdown()
