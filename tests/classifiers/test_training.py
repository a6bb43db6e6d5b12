"""train_from_store: fit on train, evaluate validation and test, save model and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import featurestore
from classifiers.metrics import evaluate
from classifiers.model_file import ModelFileError, load_model
from classifiers.params import ParamError
from classifiers.training import TrainError, train_from_store
from tests.classifiers.conftest import CLASS_NAMES, FAST_HEAD, make_flip_store, make_maps

PNG = b"\x89PNG\r\n\x1a\n"


def test_logreg_report_model_and_plots(tiny_store: Path, tmp_path: Path) -> None:
    report = train_from_store(tiny_store, "logreg", tmp_path / "model", {"C": 5})
    assert report.counts == {"train": 36, "validation": 12, "test": 12}
    assert set(report.metrics) == {"validation", "test"}
    assert report.metrics["test"]["accuracy"] > 0.9  # the classes are far apart
    assert report.params["C"] == 5.0 and report.features == "max"
    assert set(report.plots) == {"confusion_matrix_validation", "confusion_matrix_test"}
    assert all(path.read_bytes().startswith(PNG) for path in report.plots.values())
    json.dumps(report.to_dict())  # JSON-able for --json
    assert "[test]" in report.summary() and "balanced_accuracy" in report.summary()

    store = featurestore.open_store(tiny_store)
    saved = load_model(report.model_path)
    assert saved.fingerprint == store.fingerprint.to_dict()
    assert saved.store_digest == store.digest
    assert saved.metadata["metrics"]["test"] == report.metrics["test"]
    test = store.load("test")
    again = evaluate(saved.estimator, test.features, test.labels, CLASS_NAMES)
    assert again == report.metrics["test"]


def test_dense_head_stops_on_the_validation_split(tiny_store: Path, tmp_path: Path) -> None:
    params = {**FAST_HEAD, "epochs": 30, "patience": 2}
    report = train_from_store(tiny_store, "dense", tmp_path / "model", params)
    assert report.training["best_epoch"] is not None
    assert report.training["epochs_run"] <= 30
    assert report.plots["training_curves"].read_bytes().startswith(PNG)
    head = load_model(report.model_path).estimator
    assert len(head.history_["val_loss"]) == report.training["epochs_run"]


def test_unlabeled_rows_are_left_out(tmp_path: Path) -> None:
    from featurestore.testing import make_store

    X, y = make_maps(30)
    y[:5] = -1
    make_store(tmp_path / "s", X, y, CLASS_NAMES, splits=["train"] * 20 + ["test"] * 10)
    report = train_from_store(tmp_path / "s", "knn", tmp_path / "m", {"n_neighbors": 3})
    assert report.counts["train"] == 15
    assert report.metrics["test"]["n_samples"] == 10
    assert "validation" not in report.metrics  # an empty split is not evaluated


def test_one_class_in_train_is_a_clear_error(tmp_path: Path) -> None:
    from featurestore.testing import make_store

    X, _ = make_maps(10)
    y = np.array([0] * 8 + [1] * 2)
    make_store(tmp_path / "s", X, y, CLASS_NAMES, splits=["train"] * 8 + ["test"] * 2)
    with pytest.raises(TrainError, match="labeled rows of 1 class"):
        train_from_store(tmp_path / "s", "logreg", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_bad_names_fail_before_the_store_is_read(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="unknown classifier"):
        train_from_store(tmp_path / "no-store", "resnet", tmp_path / "m")
    with pytest.raises(ParamError, match="unknown parameter 'Cee'"):
        train_from_store(tmp_path / "no-store", "logreg", tmp_path / "m", {"Cee": 1})
    with pytest.raises(featurestore.StoreError):
        train_from_store(tmp_path / "no-store", "logreg", tmp_path / "m")
    (tmp_path / "photos").mkdir()
    with pytest.raises(ModelFileError, match="already exists"):
        train_from_store(tmp_path / "no-store", "logreg", tmp_path / "photos", overwrite=True)


def test_flipped_views_double_the_training_rows(
    tmp_path: Path, tiny_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import classifiers.training as training

    store = make_flip_store(tmp_path / "flips")
    seen = []
    real_fit = training.fit_estimator

    def spy(estimator, X, y, validation=None):
        seen.append((len(X), None if validation is None else len(validation[0])))
        return real_fit(estimator, X, y, validation)

    monkeypatch.setattr(training, "fit_estimator", spy)
    report = train_from_store(store, "logreg", tmp_path / "m1")
    assert seen[-1] == (48, 8)  # 24 images and their mirror images; validation as is
    assert report.counts["train"] == 24 and report.training["flipped_views"] is True
    assert load_model(report.model_path).metadata["training"]["flipped_views"] is True
    train_from_store(store, "logreg", tmp_path / "m2", flips=False)
    assert seen[-1] == (24, 8)
    with pytest.raises(TrainError, match="no flipped views"):
        train_from_store(tiny_store, "logreg", tmp_path / "m3", flips=True)


def _entries(folder: Path) -> list[str]:
    """Names in `folder`, hidden ones included; [] when it does not exist."""
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("classifier", ["logreg", "dense"])
def test_every_model_folder_has_its_plots(tiny_store: Path, tmp_path: Path, classifier: str) -> None:
    params = FAST_HEAD if classifier == "dense" else {}
    report = train_from_store(tiny_store, classifier, tmp_path / "models" / "m", params)
    expected = {"confusion_matrix_validation.png", "confusion_matrix_test.png"}
    if classifier == "dense":
        expected.add("training_curves.png")
    pngs = {path.name for path in report.model_path.iterdir() if path.suffix == ".png"}
    assert pngs == expected
    assert {path.name for path in report.plots.values()} == expected
    assert all(
        path.parent == report.model_path and path.read_bytes().startswith(PNG)
        for path in report.plots.values()
    )
    assert _entries(tmp_path / "models") == ["m"]  # no temporary folder left


def test_a_model_whose_plots_fail_is_not_written(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import classifiers.training as training

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training, "plot_confusion_matrix", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train_from_store(tiny_store, "logreg", tmp_path / "models" / "m")
    assert _entries(tmp_path / "models") == []  # never a model folder without its plots


def test_a_parameter_scikit_learn_refuses_is_a_train_error(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"logreg cannot be trained with these settings: The 'C' parameter"):
        train_from_store(tiny_store, "logreg", tmp_path / "models" / "m", {"C": -1.0})
    with pytest.raises(ParamError, match="parameter hidden must be an integer >= 0"):
        train_from_store(tiny_store, "dense", tmp_path / "models" / "m", {**FAST_HEAD, "hidden": -1})
    assert _entries(tmp_path / "models") == []
