"""Benchmark registered classifiers on identical folds of a feature store.

>>> from classifiers.bench import BenchConfig, run_benchmark
>>> result = run_benchmark(BenchConfig(store="runs/cats.store", out="runs/bench"))
>>> result.rows[0].name, result.rows[0].summaries["accuracy"].mean

Modules: `config` (settings, grids, variants), `folds` (data and folds), `cells` (one cached
fit), `stats` (corrected intervals and t-test), `leaderboard` (rows), `report` and `plot`
(outputs), `runner` (`run_benchmark`), `command` (the click command). Names are exported
lazily so that importing the command costs only click.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchConfig": "classifiers.bench.config",
    "BenchError": "classifiers.errors",
    "BenchResult": "classifiers.bench.leaderboard",
    "run_benchmark": "classifiers.bench.runner",
    "format_table": "classifiers.bench.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'classifiers.bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
