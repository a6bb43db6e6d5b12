"""FeatureTransform: (N, H, W, C) maps to (N, D) vectors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from classifiers.transforms import FeatureTransform, as_maps


@pytest.fixture
def X() -> np.ndarray:
    return np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)


def test_flatten_keeps_every_value_in_row_major_order(X: np.ndarray) -> None:
    out = FeatureTransform("flatten").fit_transform(X)
    assert out.shape == (2, 24)
    np.testing.assert_array_equal(out[1], X[1].ravel())


@pytest.mark.parametrize(("mode", "reduce"), [("avg", np.mean), ("max", np.max)])
def test_pooling_reduces_over_positions(X: np.ndarray, mode: str, reduce) -> None:
    out = FeatureTransform(mode).fit_transform(X)
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out, reduce(X, axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize("mode", ["flatten", "avg", "max"])
def test_float32_stays_float32_and_input_is_untouched(X: np.ndarray, mode: str) -> None:
    before = X.copy()
    out = FeatureTransform(mode).fit_transform(X)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(X, before)
    assert FeatureTransform(mode).fit(X).n_features_out_ == out.shape[1]


@pytest.mark.parametrize("mode", ["flatten", "avg", "max"])
def test_vectors_are_one_by_one_maps(mode: str) -> None:
    vectors = np.random.default_rng(0).random((5, 7))
    np.testing.assert_allclose(FeatureTransform(mode).fit_transform(vectors), vectors)


def test_other_shapes_and_modes_are_refused(X: np.ndarray) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        FeatureTransform("median").fit(X)
    with pytest.raises(ValueError, match=r"per-sample shape \(2, 3, 5\)"):
        FeatureTransform().fit(X).transform(np.zeros((1, 2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="feature maps or"):
        as_maps(np.zeros((2, 3, 4)))


def test_clone_keeps_the_mode() -> None:
    assert clone(FeatureTransform("max")).mode == "max"
