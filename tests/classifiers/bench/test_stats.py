"""The corrected resampled t-test and intervals against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from classifiers.bench.stats import corrected_resampled_ttest, summarize

# Differences d = a - b over J = 5 folds of 80 train / 20 test rows:
#   mean 0.015; s^2 = (2 * 0.005^2 + 2 * 0.015^2) / 4 = 1.25e-4
#   corrected variance (1/5 + 20/80) * s^2 = 0.45 * 1.25e-4 = 5.625e-5, sqrt = 0.0075
#   t = 0.015 / 0.0075 = 2.0 with 4 degrees of freedom
#   two-sided p for 4 df in closed form: 1 - t (t^2 + 6) / (t^2 + 4)^1.5 = 1 - 20 / 8^1.5
A = [0.81, 0.82, 0.80, 0.83, 0.815]
B = [0.80, 0.80, 0.80, 0.80, 0.80]


def test_ttest_matches_hand_computation() -> None:
    result = corrected_resampled_ttest(A, B, n_train=80, n_test=20)
    assert result.mean_difference == pytest.approx(0.015)
    assert result.t == pytest.approx(2.0)
    assert result.df == 4
    assert result.p_value == pytest.approx(1 - 20 / 8**1.5, abs=1e-9)  # 0.1161...


def test_correction_widens_the_test() -> None:
    # The uncorrected test (s^2 / J) would give t = 3 and p < 0.05 on the same differences.
    corrected = corrected_resampled_ttest(A, B, n_train=80, n_test=20)
    nearly_uncorrected = corrected_resampled_ttest(A, B, n_train=1e12, n_test=1)
    assert nearly_uncorrected.t == pytest.approx(3.0)
    assert nearly_uncorrected.p_value < 0.05 < corrected.p_value


def test_ttest_is_symmetric_and_degenerate_cases() -> None:
    forward = corrected_resampled_ttest(A, B, 80, 20)
    backward = corrected_resampled_ttest(B, A, 80, 20)
    assert backward.t == pytest.approx(-forward.t) and backward.p_value == pytest.approx(forward.p_value)
    assert corrected_resampled_ttest(A, A, 80, 20).p_value == 1.0  # the same scores on every fold
    shifted = corrected_resampled_ttest([x + 0.1 for x in B], B, 80, 20)  # a constant gap
    assert shifted.p_value == 0.0 and math.isinf(shifted.t)
    with pytest.raises(ValueError, match="at least 2"):
        corrected_resampled_ttest([0.9], [0.8], 80, 20)


def test_interval_is_corrected_t_interval_and_clipped() -> None:
    s = summarize(A, n_train=80, n_test=20)
    std = math.sqrt(5e-4 / 4)
    half = 2.7764451051977987 * std * math.sqrt(0.45)  # t(0.975, 4) x s x sqrt(1/J + n2/n1)
    assert s.mean == pytest.approx(0.815) and s.std == pytest.approx(std)
    assert (s.low, s.high) == pytest.approx((0.815 - half, 0.815 + half))
    near_one = summarize([0.99, 1.0, 0.97, 1.0, 1.0], 80, 20, bounds=(0.0, 1.0))
    assert near_one.high == 1.0 and near_one.low < near_one.mean


def test_summary_skips_undefined_folds() -> None:
    s = summarize([0.9, None, 0.8], 80, 20)
    assert s.n == 2 and s.mean == pytest.approx(0.85)
    single = summarize([None, 0.7], 80, 20)
    assert single.mean == 0.7 and single.std is None and single.low is None
    assert summarize([None, None], 80, 20).mean is None
