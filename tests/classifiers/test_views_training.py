"""Heads on cached augmented views (extract --views K): K + 1 rows per fitted image, no view of a
scored image fitted, test-time averaging over the views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import featurestore
from classifiers.fit_data import fit_data
from classifiers.model_file import load_model
from classifiers.training import TrainError, train_from_store
from tests.classifiers.conftest import make_flip_store, view_maps

K = 2


def row_bytes(X: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.asarray(X, np.float32).reshape(len(X), -1)}


@pytest.mark.parametrize("fit_on", ["train", "train+validation"])
def test_each_fitted_image_brings_its_views_and_no_scored_image_does(tmp_path: Path, fit_on: str) -> None:
    store = featurestore.open_store(make_flip_store(tmp_path / "views", views=K))
    data = fit_data(store, fit_on, flips=False, tta=False, early_stopping=False, views=True)
    images = data.info["fit_images"]
    assert images == (24 if fit_on == "train" else 32)
    assert len(data.X) == len(data.y) == (K + 1) * images == data.info["fit_rows"]
    assert data.info["augmented_views"] == K
    fitted = row_bytes(data.X)
    for split in ("train", "validation", "test"):
        rows = store.load(split)
        for maps in rows.features:
            own = [maps, *(view_maps(maps, k) for k in range(1, K + 1))]
            inside = [m.astype(np.float32).tobytes() in fitted for m in own]
            fitted_split = split == "train" or (split == "validation" and fit_on != "train")
            assert inside == [fitted_split] * (K + 1)  # an image and all its views, or none of them
    # labels follow their images: a view's label is its image's
    by_bytes = dict(zip((r.tobytes() for r in data.X.reshape(len(data.X), -1)), data.y, strict=True))
    train = store.load("train")
    for maps, label in zip(train.features, train.labels, strict=True):
        assert all(by_bytes[view_maps(maps, k).tobytes()] == label for k in range(1, K + 1))


def test_train_uses_the_views_by_default_and_records_them(tmp_path: Path) -> None:
    path = make_flip_store(tmp_path / "views", views=K)
    report = train_from_store(path, "logreg", tmp_path / "m", flips=False)
    assert report.training["augmented_views"] == K and report.training["fit_rows"] == 24 * (K + 1)
    metadata = load_model(report.model_path).metadata
    assert metadata["training"]["augmented_views"] == K
    plain = train_from_store(path, "logreg", tmp_path / "m2", flips=False, views=False)
    assert plain.training["augmented_views"] == 0 and plain.training["fit_rows"] == 24


def test_tta_views_averages_over_the_image_and_its_views(tmp_path: Path) -> None:
    path = make_flip_store(tmp_path / "views", views=K)
    report = train_from_store(path, "logreg", tmp_path / "m", tta="views", views=False, flips=False)
    assert load_model(report.model_path).metadata["tta"] == "views"
    saved = load_model(report.model_path)
    store = featurestore.open_store(path)
    test = store.load("test")
    proba = np.mean(
        [saved.estimator.predict_proba(test.features)]
        + [saved.estimator.predict_proba(store.load("test", view=k).features) for k in range(1, K + 1)],
        axis=0,
    )
    expected = float(np.mean(np.argmax(proba, axis=1) == test.labels))
    assert report.metrics["test"]["accuracy"] == pytest.approx(expected)


def test_views_on_a_store_without_them_is_a_train_error(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="no augmented views"):
        train_from_store(tiny_store, "logreg", tmp_path / "m", views=True)
    with pytest.raises(TrainError, match="no augmented views"):
        train_from_store(tiny_store, "logreg", tmp_path / "m", tta="views")
