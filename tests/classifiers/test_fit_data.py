"""train --fit-on train+validation and --tta flip: which rows are fitted, stopped on and scored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import featurestore
from classifiers.fit_data import INNER_VALIDATION, fit_data, inner_validation
from classifiers.metrics import full_proba, metrics_from_proba
from classifiers.model_file import load_model
from classifiers.training import TrainError, train_from_store
from tests.classifiers.conftest import CLASS_NAMES, FAST_HEAD, make_flip_store


def test_inner_validation_is_a_stable_share_of_the_ids() -> None:
    ids = np.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)])
    mask = inner_validation(ids)
    assert abs(mask.mean() - INNER_VALIDATION) < 0.03
    assert (inner_validation(ids[::-1]) == mask[::-1]).all()  # a function of each id alone
    assert not inner_validation(ids, 0.0).any() and inner_validation(ids, 1.0).all()


def test_fit_on_train_and_validation_scores_test_only(tiny_store: Path, tmp_path: Path) -> None:
    report = train_from_store(tiny_store, "logreg", tmp_path / "m", fit_on="train+validation")
    assert report.counts == {"train+validation": 48, "test": 12}
    assert set(report.metrics) == {"test"}
    metadata = load_model(report.model_path).metadata
    assert metadata["training"]["fit_on"] == "train+validation"
    assert "inner_validation" not in metadata["training"]  # scikit-learn models stop on nothing
    assert "train+validation" in report.summary()


def test_a_keras_head_stops_on_an_inner_split_of_train_and_validation(tmp_path: Path) -> None:
    store = featurestore.open_store(make_flip_store(tmp_path / "flips"))
    data = fit_data(store, "train+validation", flips=True, tta=False, early_stopping=True)
    pool = np.concatenate([store.load("train").ids, store.load("validation").ids]).astype(str)
    held = inner_validation(pool)
    assert data.validation is not None and len(data.validation[1]) == held.sum() > 0
    # Each fitted image twice (as is and mirrored); no held-out image nor its mirror is fitted.
    assert len(data.y) == 2 * (~held).sum() == 2 * data.info["fit_images"]
    stop_maps = data.validation[0].reshape(len(data.validation[0]), -1)
    fitted_maps = {row.tobytes() for row in data.X.reshape(len(data.X), -1)}
    flipped_stop = stop_maps.reshape(data.validation[0].shape)[:, :, ::-1].reshape(len(stop_maps), -1)
    assert not any(row.tobytes() in fitted_maps for row in (*stop_maps, *flipped_stop))

    params = {**FAST_HEAD, "epochs": 4, "patience": 2}
    report = train_from_store(tmp_path / "flips", "dense", tmp_path / "m", params, fit_on="train+validation")
    assert report.training["inner_validation"] == held.sum()
    assert report.training["epochs_run"] <= 4 and set(report.metrics) == {"test"}


def test_an_unknown_fit_on_is_a_train_error(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="--fit-on must be one of"):
        train_from_store(tiny_store, "logreg", tmp_path / "m", fit_on="everything")


def test_tta_flip_averages_both_views_and_is_recorded(tmp_path: Path) -> None:
    path = make_flip_store(tmp_path / "flips")
    report = train_from_store(path, "logreg", tmp_path / "m", tta="flip")
    saved = load_model(report.model_path)
    assert saved.metadata["tta"] == "flip" and saved.metadata["training"]["tta"] == "flip"
    store = featurestore.open_store(path)
    test, flipped = store.load("test"), store.load("test", flipped=True)
    proba = (
        full_proba(saved.estimator, test.features, 2) + full_proba(saved.estimator, flipped.features, 2)
    ) / 2
    assert report.metrics["test"] == metrics_from_proba(test.labels, proba, CLASS_NAMES)
    plain = train_from_store(path, "logreg", tmp_path / "m2")
    assert load_model(plain.model_path).metadata["tta"] == "none"


def test_tta_flip_needs_flipped_views(tiny_store: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="--tta flip needs the flipped views"):
        train_from_store(tiny_store, "logreg", tmp_path / "m", tta="flip")
    with pytest.raises(ValueError, match="tta must be one of"):
        train_from_store(tiny_store, "logreg", tmp_path / "m", tta="crops")


def test_the_cli_fits_on_train_and_validation_with_flips(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from classifiers import cli, fit_data, tta

    assert cli.FIT_ON == fit_data.FIT_ON and cli.TTA_MODES == tta.TTA_MODES
    store = make_flip_store(tmp_path / "flips")
    args = ["train", str(store), "-c", "logreg", "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(cli.main, [*args, "--fit-on", "train+validation", "--tta", "flip", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["training"]["fit_on"] == "train+validation" and report["training"]["tta"] == "flip"
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(cli.main, ["predict", str(tmp_path / "m"), str(store), "--out", str(out)])
    assert result.exit_code == 0 and "40 rows" in result.output
    result = CliRunner().invoke(cli.main, [*args[:-1], str(tmp_path / "m2"), "--fit-on", "all"])
    assert result.exit_code == 2 and "'all' is not one of" in result.output
