"""Drift statistics on synthetic pooled rows and a small real store (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from featurestore.drift import (
    DEFAULT_ALPHA,
    MIN_ROWS,
    class_balance,
    compare,
    failure_rate,
    mmd_p_value,
    pool_maps,
)
from featurestore.drift_check import check_drift, sample_store
from featurestore.store import open_store
from featurestore.testing import make_store
from tests.conftest import REPO_ROOT

NAMES = ("cats", "dogs")


def rows(n: int, seed: int, shift: float = 0.0, dims: int = 64) -> np.ndarray:
    """ReLU-like rows; `shift` moves the first 8 columns."""
    x = np.abs(np.random.default_rng(seed).normal(size=(n, dims)))
    x[:, :8] += shift
    return x


def labels(n: int) -> np.ndarray:
    return np.arange(n) % 2


def test_pooling_averages_or_takes_the_max_over_positions() -> None:
    maps = np.arange(2 * 2 * 2 * 3, dtype=np.float32).reshape(2, 2, 2, 3)
    assert pool_maps(maps, "avg").tolist()[0] == [4.5, 5.5, 6.5]
    assert pool_maps(maps, "max").tolist()[0] == [9, 10, 11]
    with pytest.raises(ValueError, match="pool"):
        pool_maps(maps, "sum")


def test_the_same_distribution_is_not_drift_and_a_shift_is() -> None:
    quiet = compare(rows(600, 0), labels(600), rows(80, 1), labels(80), NAMES)
    assert not quiet.drifted and abs(quiet.overall.auc - 0.5) < 0.1 and quiet.overall.p_value > 0.05
    shifted = compare(rows(600, 0), labels(600), rows(80, 1, shift=1.0), labels(80), NAMES)
    assert shifted.drifted and shifted.overall.auc > 0.95 and shifted.overall.p_value < DEFAULT_ALPHA / 3
    assert [c.scope for c in shifted.per_class] == ["cats", "dogs"] and all(
        c.drifted for c in shifted.per_class
    )
    assert "DRIFT" in shifted.line() and "no drift" in quiet.line()


def test_a_shift_in_one_class_is_found_in_that_class() -> None:
    tonight = rows(120, 1)
    tonight[labels(120) == 1, :8] += 1.5  # only the dogs changed
    report = compare(rows(600, 0), labels(600), tonight, labels(120), NAMES)
    per_class = {c.scope: c for c in report.per_class}
    assert per_class["dogs"].drifted and not per_class["cats"].drifted
    assert report.drifted
    # Bonferroni over the overall test and two classes.
    assert [c.alpha for c in [report.overall, *report.per_class]] == pytest.approx([DEFAULT_ALPHA / 3] * 3)


def test_a_high_auc_needs_a_small_p_value_too() -> None:
    """A night too small for the kernel test to be sure is not flagged on its AUC alone."""
    report = compare(rows(300, 0), labels(300), rows(10, 1, shift=0.6), labels(10), NAMES, threshold=0.5)
    assert report.overall.auc is not None
    assert report.drifted == (report.overall.p_value < report.overall.alpha)


def test_too_few_rows_give_no_verdict_and_the_threshold_is_an_auc() -> None:
    report = compare(rows(100, 0), labels(100), rows(MIN_ROWS - 1, 1, shift=3.0), labels(MIN_ROWS - 1), NAMES)
    assert report.overall.auc is None and not report.drifted and "too few rows" in report.overall.note
    assert report.per_class == ()
    with pytest.raises(ValueError, match="threshold"):
        compare(rows(50, 0), labels(50), rows(50, 1), labels(50), NAMES, threshold=0.3)


def test_the_kernel_test_p_value_is_a_permutation_p_value() -> None:
    x = np.random.default_rng(0).normal(size=(80, 4))
    side = np.arange(80) >= 40
    p_same = mmd_p_value(x, side, permutations=199, seed=0)
    assert 0.05 < p_same <= 1
    x[side] += 3
    assert mmd_p_value(x, side, permutations=199, seed=0) == pytest.approx(1 / 200)


def test_the_p_value_is_uniform_enough_under_the_null() -> None:
    """Same distribution, 200 seeds: rejections at 0.05 about 5% (a permutation test is exact)."""
    rejected = 0
    for seed in range(200):
        x = np.random.default_rng(seed).normal(size=(40, 3))
        rejected += mmd_p_value(x, np.arange(40) >= 30, permutations=99, seed=seed) <= 0.05
    assert rejected / 200 <= 0.09


def test_class_balance_and_failure_rate() -> None:
    balance = class_balance(np.array([0, 0, 1, 1, -1]), np.array([1, 1, 1, 0]), NAMES)
    assert balance.earlier == {"cats": 0.5, "dogs": 0.5} and balance.tonight == {"cats": 0.25, "dogs": 0.75}
    assert balance.total_variation == pytest.approx(0.25)
    assert class_balance(np.array([-1, -1]), np.array([0]), NAMES) is None  # unlabeled earlier
    rates = failure_rate(30, 100, 10, 1000)
    assert (rates.tonight, rates.earlier) == (0.3, 0.01) and rates.change == pytest.approx(0.29)
    assert rates.p_value < 1e-10
    assert failure_rate(0, 0, 5, 100).tonight is None


def test_the_report_is_small_json_that_fits_the_run_record_schema() -> None:
    report = compare(
        rows(300, 0),
        labels(300),
        rows(60, 1, shift=1.0),
        labels(60),
        NAMES,
        failures=failure_rate(1, 60, 2, 900),
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert len(json.dumps(data)) < 2000
    schema = json.loads((REPO_ROOT / "docs" / "schemas" / "run-record.schema.json").read_text())
    jsonschema.validate(data, {**schema["$defs"]["drift"], "$defs": schema["$defs"]})


def test_a_store_is_sampled_by_id_with_a_seeded_order_free_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(90, 2, 2, 16))).astype(np.float32)
    features[60:, :, :, :4] += 2.0  # the last 30 rows are "tonight" and look different
    make_store(tmp_path / "s", features, labels(90), NAMES)
    store = open_store(tmp_path / "s")
    data = store.load()
    # make_store names row i "<class>/<i>.jpg": tonight's rows are those from 60 on.
    tonight_ids = {i for i, path in zip(data.ids, data.paths, strict=True) if int(Path(path).stem) >= 60}
    (e, el), (t, tl) = sample_store(store, tonight_ids, cap=50)
    assert (len(e), len(t)) == (50, 30)  # the earlier side capped
    assert len(el) == 50 and np.bincount(tl).tolist() == [15, 15]
    np.testing.assert_allclose(np.sort(t[:, 0]), np.sort(features[60:].mean(axis=(1, 2))[:, 0]), rtol=1e-6)
    again = sample_store(store, tonight_ids, cap=50)
    np.testing.assert_array_equal(again[0][0], e)  # seeded: the same sample
    other_seed = sample_store(store, tonight_ids, cap=50, seed=1)
    assert not np.array_equal(np.sort(other_seed[0][0][:, 0]), np.sort(e[:, 0]))
    report = check_drift(store, tonight_ids)
    assert report.drifted and report.overall.n_tonight == 30 and report.overall.n_earlier == 60
    nothing_new = check_drift(store, set())
    assert not nothing_new.drifted and nothing_new.overall.auc is None
