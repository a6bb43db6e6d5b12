"""A fitted logreg pipeline as a Keras head: the same probabilities, so fine-tuning can start
from the leaderboard's logreg instead of a weaker dense head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifiers.finetune.linear_head import is_linear_pipeline, linear_head_network
from classifiers.registry import make_classifier


def _maps(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like maps whose mean differs by class, so the regression learns something."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    signal = 0.8 * y[:, None, None, None] * (np.arange(16) % 3 == 0)
    X = np.maximum(rng.normal(size=(n, 3, 3, 16)) + signal, 0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("features", ["max", "avg", "flatten"])
def test_the_network_gives_the_pipelines_probabilities(classes: int, features: str) -> None:
    X, y = _maps(60, classes)
    pipeline = make_classifier("logreg", {}, features=features).fit(X, y)
    network = linear_head_network(pipeline, X.shape[1:])
    proba = np.asarray(network.predict(X, verbose=0), dtype=np.float64)
    if classes == 2:
        proba = np.hstack([1 - proba, proba])
    expected = pipeline.predict_proba(X)
    assert np.ptp(expected[:, 1]) > 0.1  # it tells rows apart, so a wrong weight layout shows
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_other_classifiers_are_not_linear_heads() -> None:
    X, y = _maps(40, 2)
    for name in ("rbf-svm", "linear-svm", "knn"):  # calibrated or not linear in probability
        fitted = make_classifier(name, {}).fit(X, y)
        assert not is_linear_pipeline(fitted)
        with pytest.raises(ValueError, match="LogisticRegression pipeline"):
            linear_head_network(fitted, X.shape[1:])
    assert is_linear_pipeline(make_classifier("logreg", {}).fit(X, y))


def test_a_saved_logreg_model_warm_starts_with_its_own_probabilities(
    tiny_store: Path, tmp_path: Path
) -> None:
    import featurestore
    from classifiers.finetune.warmstart import load_head
    from classifiers.model_file import load_model
    from classifiers.training import train_from_store

    path = train_from_store(tiny_store, "logreg", tmp_path / "logreg").model_path
    store = featurestore.open_store(tiny_store)
    warm = load_head(path, store)
    maps = store.load().features
    proba = np.asarray(warm.network.predict(maps, verbose=0), dtype=np.float64)[:, 0]
    expected = load_model(path).estimator.predict_proba(maps)[:, 1]
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    assert warm.lineage()["classifier"] == "logreg"


def test_a_network_fine_tuned_from_a_logreg_head_is_saved_and_predicts(
    tiny_store: Path, tmp_path: Path
) -> None:
    from classifiers.model_file import load_model
    from classifiers.training import train_from_store
    from tests.classifiers.finetune.conftest import SIZE, finetune_cli

    logreg = train_from_store(tiny_store, "logreg", tmp_path / "logreg").model_path
    finetune_cli(tiny_store, logreg, tmp_path / "ft", "--from-cache", "--epochs", "1")
    saved = load_model(tmp_path / "ft")  # through the fine-tuned archive's allow-list
    assert saved.metadata["head"]["classifier"] == "logreg"
    assert type(saved.estimator.model_.get_layer("pool")).__name__ == "GlobalMaxPooling2D"
    images = np.random.default_rng(0).integers(0, 256, size=(3, SIZE, SIZE, 3)).astype(np.float32)
    proba = saved.estimator.predict_proba(images)
    assert proba.shape == (3, 2) and np.allclose(proba.sum(axis=1), 1)
