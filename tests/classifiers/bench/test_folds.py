"""Data loading and folds: ordered by id, stratified, seeded, and refused when too small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifiers.bench.config import BenchError
from classifiers.bench.folds import _labelled_unique, load_data, make_folds
from featurestore.testing import make_store
from tests.classifiers.bench.conftest import write_store


def test_folds_depend_on_content_not_on_row_order(tmp_path: Path) -> None:
    a = load_data(write_store(tmp_path / "a.store"), folds=3)
    reversed_rows = np.arange(72)[::-1]
    b = load_data(write_store(tmp_path / "b.store", order=reversed_rows), folds=3)
    assert list(a.ids) == sorted(a.ids) and np.array_equal(a.ids, b.ids)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    folds_a = make_folds(a.y, a.ids, 3, 2, seed=7)
    folds_b = make_folds(b.y, b.ids, 3, 2, seed=7)
    assert [f.digest for f in folds_a] == [f.digest for f in folds_b]
    assert len({f.digest for f in folds_a}) == 6  # two repeats, three different test folds each


def test_folds_partition_and_stratify(tiny_store: Path) -> None:
    data = load_data(tiny_store, folds=3)
    folds = make_folds(data.y, data.ids, 3, 1, seed=0)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests) == list(range(len(data.y)))  # every row tested exactly once
    for fold in folds:
        assert not set(fold.train) & set(fold.test)
        share = data.y[fold.test].mean()
        assert abs(share - data.y.mean()) < 0.1  # stratified: the class balance of the pool
    other_seed = make_folds(data.y, data.ids, 3, 1, seed=1)
    assert [f.digest for f in folds] != [f.digest for f in other_seed]


def test_whole_store_is_read_and_described(tiny_store: Path) -> None:
    data = load_data(tiny_store, folds=3)
    counts = data.store["counts"]
    pool = sum(counts["train"].values()) + sum(counts["validation"].values())
    assert len(data.y) == pool and len(data.y_test) == sum(counts["test"].values())
    assert data.store["digest"] and data.store["fingerprint"]["backbone"] == "vgg16"
    assert not set(data.ids) & set(data.ids_test)


def test_duplicate_images_are_kept_once() -> None:
    ids = np.array(["x", "y", "x", "z"], dtype=object)
    paths = np.array(["p3", "p1", "p0", "p2"], dtype=object)
    X, y, kept, dropped = _labelled_unique(np.arange(4.0)[:, None], np.array([0, 1, 0, -1]), ids, paths)
    assert list(kept) == ["x", "y"] and dropped == 1  # unlabelled z left out, one x copy dropped
    assert X[:, 0].tolist() == [2.0, 1.0]  # the copy with the first path wins, whatever the order
    assert y.tolist() == [0, 1]


def test_too_few_rows_or_classes_are_refused(tmp_path: Path) -> None:
    small = write_store(tmp_path / "small.store", n=12)
    with pytest.raises(BenchError, match=r"--folds 10 needs at least 10 per class"):
        load_data(small, folds=10)
    one_class = tmp_path / "one.store"
    make_store(one_class, np.ones((6, 1, 1, 4), np.float32), np.zeros(6, np.int64), ["only"])
    with pytest.raises(BenchError, match="1 class"):
        load_data(one_class, folds=2)
