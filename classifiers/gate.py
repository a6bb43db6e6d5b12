"""The retrain gate: promote a retrained model only when it is not worse than the one in use.

Both models predict the same test rows, so the comparison is paired: only the rows on which
they disagree about being right carry information. McNemar's exact test on those discordant
rows (a binomial test of b against b + c, where b rows only the new model gets right and c
rows only the baseline does) is the test for two classifiers on one test split (Dietterich
1998, "Approximate statistical tests for comparing supervised classification learning
algorithms"). bench's corrected resampled t-test is for scores over many folds; a nightly
retrain has one test split.

Decision, in order:
1. new accuracy below `min_accuracy`: refuse ("below the floor");
2. new model significantly worse than the baseline (one-sided p < alpha): refuse;
3. with `require_better`, new model not significantly better: refuse;
4. otherwise promote.

Pure numpy/scipy on arrays of predictions: it needs no model, store or Keras.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy.stats import binomtest

DEFAULT_ALPHA = 0.05


@dataclasses.dataclass(frozen=True, kw_only=True)
class GateDecision:
    """Whether to promote the new model, why, and the figures behind it (JSON-able)."""

    promote: bool
    reason: str
    n: int
    new_accuracy: float
    baseline_accuracy: float | None
    difference: float | None  # new - baseline accuracy
    difference_ci95: tuple[float, float] | None
    only_new_right: int | None  # b: discordant rows the new model gets right
    only_baseline_right: int | None  # c
    p_worse: float | None  # one-sided McNemar exact p-value that the new model is worse
    p_better: float | None  # one-sided, that it is better
    min_accuracy: float | None
    alpha: float
    test: str = "McNemar exact (binomial on discordant pairs), one-sided"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _paired_interval(b: int, c: int, n: int) -> tuple[float, float]:
    """Wald 95% interval of the difference of two paired proportions (b - c) / n."""
    d = (b - c) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return (d - 1.959963984540054 * se, d + 1.959963984540054 * se)


def decide(
    y_true: Any,
    new_pred: Any,
    baseline_pred: Any | None = None,
    *,
    min_accuracy: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    require_better: bool = False,
) -> GateDecision:
    """Decide on a retrained model from its and the baseline's predictions of the same rows.

    `y_true`, `new_pred` and `baseline_pred` are equal-length label arrays, in the same row
    order; `baseline_pred=None` applies the accuracy floor alone.
    """
    y = np.asarray(y_true)
    new = np.asarray(new_pred)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true must be a non-empty 1-d array, got shape {y.shape}")
    if new.shape != y.shape:
        raise ValueError(f"new_pred has shape {new.shape}, y_true {y.shape}: not the same rows")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ValueError(f"min_accuracy must be between 0 and 1, got {min_accuracy}")
    n = len(y)
    new_right = new == y
    new_accuracy = float(new_right.mean())
    figures: dict[str, Any] = {
        "n": n,
        "new_accuracy": new_accuracy,
        "baseline_accuracy": None,
        "difference": None,
        "difference_ci95": None,
        "only_new_right": None,
        "only_baseline_right": None,
        "p_worse": None,
        "p_better": None,
        "min_accuracy": min_accuracy,
        "alpha": alpha,
    }
    if baseline_pred is not None:
        base = np.asarray(baseline_pred)
        if base.shape != y.shape:
            raise ValueError(f"baseline_pred has shape {base.shape}, y_true {y.shape}: not the same rows")
        base_right = base == y
        b = int(np.sum(new_right & ~base_right))
        c = int(np.sum(base_right & ~new_right))
        figures.update(
            baseline_accuracy=float(base_right.mean()),
            difference=(b - c) / n,
            difference_ci95=_paired_interval(b, c, n),
            only_new_right=b,
            only_baseline_right=c,
            p_worse=float(binomtest(c, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0,
            p_better=float(binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0,
        )

    def verdict(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote=promote, reason=reason, **figures)

    if min_accuracy is not None and new_accuracy < min_accuracy:
        return verdict(False, f"accuracy {new_accuracy:.4f} is below the floor {min_accuracy:.4f}")
    if baseline_pred is None:
        return verdict(True, f"accuracy {new_accuracy:.4f}; no baseline to compare with")
    diff, p_worse, p_better = figures["difference"], figures["p_worse"], figures["p_better"]
    if p_worse < alpha:
        return verdict(False, f"significantly worse than the baseline ({diff:+.4f}, p = {p_worse:.3g})")
    if require_better and p_better >= alpha:
        return verdict(False, f"not significantly better than the baseline ({diff:+.4f}, p = {p_better:.3g})")
    if p_better < alpha:
        return verdict(True, f"significantly better than the baseline ({diff:+.4f}, p = {p_better:.3g})")
    return verdict(True, f"not significantly worse than the baseline ({diff:+.4f}, p = {p_worse:.3g})")
