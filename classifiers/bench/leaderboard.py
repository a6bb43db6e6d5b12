"""From cells to leaderboard rows: summaries over folds, the comparison with the best, grid marks.

Grids are scored on the same folds as everything else, not nested. Each grid row is then an
honest estimate of that fixed setting; what is optimistic is reading the best row of a grid
as "the tuned classifier", because it was selected on the folds that score it. That row is
marked ``selected on these folds``; its test-split figure, from a final fit on all of
train+validation and a test split no selection has seen, is the unbiased check. Nested
cross-validation would cost inner-folds x grid-size more fits per outer fold and could not
show one row per setting, which is what people compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifiers.bench.cells import METRICS
from classifiers.bench.config import BenchConfig, Variant
from classifiers.bench.stats import ALPHA, Summary, TTest, corrected_resampled_ttest, summarize

#: The metric that ranks the leaderboard and that the paired test compares.
RANK_METRIC = "accuracy"
#: The range each metric can take, to clip its interval to.
BOUNDS = {m: (0.0, None) if m == "log_loss" else (0.0, 1.0) for m in METRICS}


@dataclass(frozen=True)
class Row:
    """One leaderboard line: a variant's figures over the folds and on the test split."""

    rank: int
    variant: Variant
    params: dict[str, Any]  # every parameter of the classifier
    summaries: dict[str, Summary]
    folds: list[dict[str, Any]]  # the cells, in fold order
    test: dict[str, Any] | None  # the final fit's cell (None: no test rows)
    fit_seconds: float  # mean over folds
    predict_seconds_per_1000: float  # mean over folds
    model_bytes: int  # of the final model (of the mean fold model without a test split)
    comparison: TTest | None  # against the best; None for the best itself
    verdict: str  # "best", "tied with best" or "worse than best"
    note: str = ""

    @property
    def name(self) -> str:
        return self.variant.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "name": self.name,
            "setting": self.variant.setting,
            "classifier": self.variant.classifier,
            "features": self.variant.reads,
            "grid_params": self.variant.params,
            "params": self.params,
            "summary": {name: s.to_dict() for name, s in self.summaries.items()},
            "test": None if self.test is None else self.test["metrics"],
            "fit_seconds": self.fit_seconds,
            "predict_seconds_per_1000": self.predict_seconds_per_1000,
            "model_bytes": self.model_bytes,
            "vs_best": None
            if self.comparison is None
            else {
                "metric": RANK_METRIC,
                "mean_difference": self.comparison.mean_difference,
                "t": _finite(self.comparison.t),
                "p_value": self.comparison.p_value,
                "df": self.comparison.df,
                "test": "Nadeau-Bengio corrected resampled t-test, two-sided",
            },
            "verdict": self.verdict,
            "note": self.note,
            "folds": self.folds,
            "test_cell": self.test,
        }


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def build_rows(
    variants: Sequence[Variant],
    params: Mapping[str, dict[str, Any]],
    fold_cells: Mapping[str, list[dict[str, Any]]],
    test_cells: Mapping[str, dict[str, Any] | None],
) -> list[Row]:
    """Summarise every variant, rank by mean accuracy, test each against the best."""
    any_cells = next(iter(fold_cells.values()))
    n_train = float(np.mean([c["n_train"] for c in any_cells]))
    n_test = float(np.mean([c["n_test"] for c in any_cells]))
    summaries = {
        v.name: {
            m: summarize([c["metrics"][m] for c in fold_cells[v.name]], n_train, n_test, BOUNDS[m])
            for m in METRICS
        }
        for v in variants
    }
    # Rank by mean accuracy; the name breaks exact ties so that the order is reproducible.
    ordered = sorted(variants, key=lambda v: (-(summaries[v.name][RANK_METRIC].mean or 0.0), v.name))
    best = ordered[0]
    best_scores = [c["metrics"][RANK_METRIC] for c in fold_cells[best.name]]
    selected = _grid_winners(ordered)
    rows = []
    for rank, variant in enumerate(ordered, start=1):
        cells = fold_cells[variant.name]
        comparison = None
        verdict = "best"
        if variant is not best:
            scores = [c["metrics"][RANK_METRIC] for c in cells]
            comparison = corrected_resampled_ttest(scores, best_scores, n_train, n_test)
            verdict = "tied with best" if comparison.p_value >= ALPHA else "worse than best"
        test = test_cells.get(variant.name)
        note = ""
        if variant.grid is not None:
            note = f"grid of {variant.grid_size}"
            if variant.name in selected and variant.grid_size > 1:
                note = f"best of grid of {variant.grid_size}: selected on these folds (optimistic)"
        rows.append(
            Row(
                rank=rank,
                variant=variant,
                params=params[variant.name],
                summaries=summaries[variant.name],
                folds=list(cells),
                test=test,
                fit_seconds=float(np.mean([c["fit_seconds"] for c in cells])),
                predict_seconds_per_1000=float(np.mean([c["predict_seconds_per_1000"] for c in cells])),
                model_bytes=int(test["model_bytes"] if test else np.mean([c["model_bytes"] for c in cells])),
                comparison=comparison,
                verdict=verdict,
                note=note,
            )
        )
    return rows


def _grid_winners(ordered: Sequence[Variant]) -> set[str]:
    """The first-ranked variant of each grid."""
    winners: dict[str, str] = {}
    for variant in ordered:
        if variant.grid is not None:
            winners.setdefault(variant.grid, variant.name)
    return set(winners.values())


@dataclass(frozen=True)
class BenchResult:
    """What `run_benchmark` did: the ranked rows, the data and folds, timings, files written."""

    config: BenchConfig
    rows: list[Row]
    store: dict[str, Any]
    folds: list[dict[str, Any]]  # index, repeat, n_train, n_test, digest of the test ids
    cells_total: int
    cells_reused: int
    seconds: float
    versions: dict[str, str]
    duplicates_dropped: int = 0
    files: dict[str, str] = field(default_factory=dict)
    settings: list[dict[str, Any]] = field(default_factory=list)  # feature settings and their cost

    @property
    def cells_computed(self) -> int:
        return self.cells_total - self.cells_reused

    def to_dict(self) -> dict[str, Any]:
        """Everything, every fold's figures included: the content of results.json."""
        return {
            "format": "featurestore.bench/1",
            "versions": self.versions,
            "config": self.config.to_dict(),
            "store": self.store,
            "folds": self.folds,
            "duplicates_dropped": self.duplicates_dropped,
            "settings": self.settings,
            "statistics": {
                "interval": "95% t interval over folds with the Nadeau-Bengio corrected variance "
                "(1/J + n_test/n_train) s^2, J - 1 degrees of freedom",
                "comparison": f"corrected resampled t-test of {RANK_METRIC} against the best, paired by "
                f"fold, two-sided; 'tied with best' when p >= {ALPHA}; no multiple-comparison correction",
                "grids": "scored on the same folds (not nested); the best row of a grid is marked as "
                "selected on the folds it is scored on; its test-split figure is unbiased",
            },
            "timings": {
                "seconds": self.seconds,
                "cells_total": self.cells_total,
                "cells_reused": self.cells_reused,
                "cells_computed": self.cells_computed,
            },
            "leaderboard": [row.to_dict() for row in self.rows],
            "files": self.files,
        }
