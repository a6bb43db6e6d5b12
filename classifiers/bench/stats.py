"""Statistics over folds: means, corrected intervals and the corrected resampled t-test.

Cross-validation folds share most of their training rows, so fold scores are positively
correlated and the textbook variance of their mean (s^2 / J) is too small: intervals come
out too narrow and t-tests call noise significant. Nadeau & Bengio (2003, "Inference for the
generalization error") correct the variance to

    (1/J + n_test/n_train) * s^2

over J = folds x repeats resamplings (Bouckaert & Frank 2004 for repeated k-fold). Both the
95% interval and the paired test against the best use this corrected variance, with J - 1
degrees of freedom, so the table's intervals and its "tied with best" verdicts agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: Two-sided level of the intervals and of the test.
ALPHA = 0.05


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof 1) and corrected 95% interval of one metric over folds."""

    mean: float | None
    std: float | None
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "std": self.std, "ci95_low": self.low, "ci95_high": self.high, "n": self.n}


def corrected_variance_factor(n_folds: int, n_train: float, n_test: float) -> float:
    """Nadeau-Bengio's factor on s^2: 1/J + n_test/n_train."""
    return 1.0 / n_folds + n_test / n_train


def summarize(
    values: Sequence[float | None],
    n_train: float,
    n_test: float,
    bounds: tuple[float | None, float | None] = (None, None),
) -> Summary:
    """Summary of a metric over folds; folds where it is undefined (None) are left out.

    The interval is clipped to `bounds` (a proportion cannot exceed 1; the t interval, being
    symmetric, does not know that). With a single defined value the std and the interval are
    None: one fold says nothing about the spread.
    """
    defined = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = len(defined)
    if n == 0:
        return Summary(None, None, None, None, 0)
    mean = float(defined.mean())
    if n == 1:
        return Summary(mean, None, None, None, 1)
    std = float(defined.std(ddof=1))
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * std * math.sqrt(corrected_variance_factor(n, n_train, n_test))
    low, high = mean - float(half), mean + float(half)
    if bounds[0] is not None:
        low = max(low, bounds[0])
    if bounds[1] is not None:
        high = min(high, bounds[1])
    return Summary(mean, std, low, high, n)


@dataclass(frozen=True)
class TTest:
    """A paired corrected resampled t-test of `a - b` over the same folds."""

    mean_difference: float
    t: float
    p_value: float
    df: int


def corrected_resampled_ttest(a: Sequence[float], b: Sequence[float], n_train: float, n_test: float) -> TTest:
    """Two-sided Nadeau-Bengio test that `a` and `b` (paired by fold) have the same mean.

    `n_train` and `n_test` are the (mean) numbers of training and test rows per fold. When the
    differences do not vary, the test is degenerate: p = 1 if they are all zero (the same
    predictions), p = 0 otherwise.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"a paired t-test needs at least 2 paired folds, got {d.shape}")
    n = len(d)
    mean = float(d.mean())
    if float(np.ptp(d)) <= 1e-12:  # constant differences (rounding aside): no variance to test
        if abs(mean) <= 1e-12:
            return TTest(0.0, 0.0, 1.0, n - 1)
        return TTest(mean, math.copysign(math.inf, mean), 0.0, n - 1)
    variance = float(d.var(ddof=1)) * corrected_variance_factor(n, n_train, n_test)
    t = mean / math.sqrt(variance)
    p = 2.0 * float(stats.t.sf(abs(t), n - 1))
    return TTest(mean, t, min(1.0, p), n - 1)
