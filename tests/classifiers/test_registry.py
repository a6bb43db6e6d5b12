"""The registry: names, construction, parameter routing and parsing, config files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from classifiers.keras_heads import DenseHead, GapHead
from classifiers.params import ParamError, load_config
from classifiers.registry import (
    available,
    current_params,
    default_features,
    final_estimator,
    make_classifier,
    parameters,
    parse_params,
)
from tests.classifiers.conftest import fast_params, make_maps

NAMES = [
    "dense",
    "gap",
    "logreg",
    "linear-svm",
    "rbf-svm",
    "random-forest",
    "hist-gb",
    "knn",
    "stack",
    "vote",
]


def test_available_names() -> None:
    assert available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_each_classifier_trains_and_predicts_on_tiny_data(name: str) -> None:
    X, y = make_maps(48, n_classes=3, seed=2)
    estimator = make_classifier(name, fast_params(name))
    assert estimator.fit(X, y) is estimator
    proba = estimator.predict_proba(X)
    assert proba.shape == (48, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(estimator.predict(X)) <= {0, 1, 2}
    if name != "dense" and name != "gap":  # heads with 3 quick epochs do not reach it
        assert estimator.score(X, y) > 0.8


def test_default_features_per_classifier() -> None:
    assert default_features("dense") is None
    assert default_features("logreg") == "max"
    assert default_features("rbf-svm") == "max"
    assert make_classifier("knn")[0].mode == "max"
    assert make_classifier("knn", features="flatten")[0].mode == "flatten"


def test_features_put_a_transform_in_front_of_the_dense_head_only() -> None:
    assert isinstance(make_classifier("dense"), DenseHead)
    assert isinstance(make_classifier("gap"), GapHead)
    pipeline = make_classifier("dense", {"hidden": 16}, features="avg")
    assert isinstance(pipeline, Pipeline)
    assert pipeline[0].mode == "avg" and final_estimator(pipeline).hidden == 16
    with pytest.raises(ParamError, match="gap pools the feature maps itself"):
        make_classifier("gap", features="avg")
    with pytest.raises(ParamError, match="unknown features 'sum'"):
        make_classifier("logreg", features="sum")


def test_params_reach_the_classifier_by_short_name_and_are_not_mutated() -> None:
    params = {"C": "0.5", "max_iter": 50}
    estimator = make_classifier("linear-svm", params)
    assert params == {"C": "0.5", "max_iter": 50}
    svm = final_estimator(estimator).estimator
    assert (svm.C, svm.max_iter) == (0.5, 50)
    assert current_params(estimator)["C"] == 0.5
    assert clone(estimator).get_params()["classifier__estimator__C"] == 0.5
    assert make_classifier("logreg", {"C": 2})[-1].C == 2.0


def test_registry_seeds_every_random_estimator() -> None:
    for name in NAMES:
        values = parameters(name)
        if "random_state" in values and name not in ("logreg", "rbf-svm"):  # unused by those
            assert values["random_state"] == 0, name


def test_unknown_names_fail_with_one_clear_line() -> None:
    with pytest.raises(ParamError, match="unknown classifier 'svm'; available: dense, gap"):
        make_classifier("svm")
    with pytest.raises(ParamError, match=r"unknown parameter 'hiden' for dense; known: .*hidden"):
        make_classifier("dense", {"hiden": 3})


def test_parse_params_types_values_by_the_defaults() -> None:
    parsed = parse_params(
        ["hidden=128", "learning_rate=1e-4", "early_stopping=no", "validation_fraction=0.1"], "dense"
    )
    assert parsed == {
        "hidden": 128,
        "learning_rate": 1e-4,
        "early_stopping": False,
        "validation_fraction": 0.1,
    }
    assert type(parsed["hidden"]) is int
    assert parse_params(["max_depth=none", "max_features=0.5"], "random-forest") == {
        "max_depth": None,
        "max_features": 0.5,
    }
    assert parse_params(["n_estimators=1e3"], "random-forest") == {"n_estimators": 1000}
    assert parse_params(["class_weight=balanced"], "logreg") == {"class_weight": "balanced"}


def test_parse_params_without_a_classifier_types_literals() -> None:
    assert parse_params(["C=0.1", "hidden=128", "flag=true", "name=x", "w=none"]) == {
        "C": 0.1,
        "hidden": 128,
        "flag": True,
        "name": "x",
        "w": None,
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["C"], "parameter 'C' is not of the form name=value"),
        (["=3"], "is not of the form name=value"),
        (["C=abc"], "parameter C='abc': expected a number"),
        (["max_iter=1.5"], "parameter max_iter='1.5': expected an integer"),
        (["fit_intercept=maybe"], "parameter fit_intercept='maybe': expected true or false"),
        (["gamma=1"], "unknown parameter 'gamma' for logreg"),
    ],
)
def test_parse_params_errors_name_the_parameter(items: list[str], message: str) -> None:
    with pytest.raises(ParamError, match=message) as info:
        parse_params(items, "logreg")
    assert "\n" not in str(info.value)


def test_config_files_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('classifier = "logreg"\nfeatures = "avg"\n[params]\nC = 0.1\n')
    assert load_config(toml) == {"classifier": "logreg", "features": "avg", "params": {"C": 0.1}}
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"params": {"hidden": 64}}))
    assert load_config(as_json) == {"params": {"hidden": 64}}
    assert make_classifier("dense", load_config(as_json)["params"]).hidden == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classifier = ", "is not valid toml"),
        ('clasifier = "logreg"', r"unknown keys \['clasifier'\]"),
        ('params = "C=1"', "'params' must be a table"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ParamError, match=message):
        load_config(path)
    with pytest.raises(ParamError, match="cannot read config"):
        load_config(tmp_path / "missing.json")
