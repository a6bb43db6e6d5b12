"""Grids and variants: parsing, typing through the registry, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifiers.bench.config import (
    BenchConfig,
    BenchError,
    expand_variants,
    load_grid_file,
    merge_grids,
    parse_grid,
)
from classifiers.params import ParamError
from classifiers.registry import default_features
from featurestore.errors import ConfigError


def config(**kwargs: object) -> BenchConfig:
    return BenchConfig(store=Path("s"), out=Path("o"), **kwargs)


def test_parse_grid_repeats_add_parameters() -> None:
    grid = parse_grid(["logreg:C=0.01, 0.1,1", "logreg:max_iter=200", "knn:n_neighbors=3"])
    assert grid == {"logreg": {"C": ["0.01", "0.1", "1"], "max_iter": ["200"]}, "knn": {"n_neighbors": ["3"]}}


@pytest.mark.parametrize("spec", ["logreg", "logreg:C", "logreg:C=", ":C=1", "logreg:C=1,,2", "logreg:=1"])
def test_parse_grid_refuses_malformed(spec: str) -> None:
    with pytest.raises(BenchError, match="classifier:param=v1,v2"):
        parse_grid([spec])


def test_grid_expands_to_typed_named_variants_replacing_the_plain_row() -> None:
    grid = parse_grid(["logreg:C=0.01,1", "logreg:features=avg,flatten"])
    variants = expand_variants(config(classifiers=("logreg", "knn"), grid=grid))
    names = [v.name for v in variants]
    assert names == [
        "logreg[C=0.01,features=avg]",
        "logreg[C=0.01,features=flatten]",
        "logreg[C=1,features=avg]",
        "logreg[C=1,features=flatten]",
        "knn",
    ]
    first = variants[0]
    assert first.params == {"C": 0.01} and isinstance(variants[2].params["C"], float)
    assert (first.features, first.reads, first.grid, first.grid_size) == ("avg", "avg", "logreg", 4)
    assert variants[-1].grid is None and variants[-1].reads == default_features("knn")


def test_grid_adds_its_classifier_and_global_features_spare_gap() -> None:
    variants = expand_variants(config(classifiers=("knn",), grid={"logreg": {"C": [0.5]}}, features="max"))
    assert [(v.name, v.reads) for v in variants] == [("knn", "max"), ("logreg[C=0.5]", "max")]
    gap = expand_variants(config(classifiers=("gap", "dense"), features="avg"))
    assert [(v.name, v.features, v.reads) for v in gap] == [("gap", None, "maps"), ("dense", "avg", "avg")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classifiers": ("nope",)}, "unknown classifier 'nope'"),
        ({"grid": {"logreg": {"bogus": ["1"]}}}, "unknown parameter 'bogus' for logreg"),
        ({"grid": {"knn": {"n_neighbors": ["three"]}}}, "n_neighbors='three': expected an integer"),
        ({"grid": {"logreg": {"features": ["median"]}}}, "unknown features 'median'"),
        ({"grid": {"gap": {"features": ["avg"]}}}, "gap pools the feature maps itself"),
        ({"features": "median"}, "unknown --features 'median'"),
        ({"classifiers": ("knn", "knn")}, "knn is listed twice"),
    ],
)
def test_bad_variants_fail_with_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises((BenchError, ParamError), match=message) as caught:
        expand_variants(config(**kwargs))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 1}, "--folds"),
        ({"repeats": 0}, "--repeats"),
        ({"jobs": 0}, "--jobs"),
        ({"jobs": -2}, "--jobs"),
    ],
)
def test_config_validates_numbers(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**kwargs)


def test_config_copies_the_callers_grid() -> None:
    grid = {"logreg": {"C": ["1"]}}
    made = config(grid=grid)
    grid["logreg"]["C"].append("2")
    assert made.grid == {"logreg": {"C": ["1"]}}


def test_grid_file_json_and_merge(tmp_path: Path) -> None:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"logreg": {"C": [0.01, 0.1], "max_iter": 300}}))
    from_file = load_grid_file(path)
    assert from_file == {"logreg": {"C": [0.01, 0.1], "max_iter": [300]}}
    merged = merge_grids(from_file, parse_grid(["logreg:C=1"]))
    assert merged == {"logreg": {"C": ["1"], "max_iter": [300]}}
    names = [v.name for v in expand_variants(config(classifiers=(), grid=from_file))]
    assert names == ["logreg[C=0.01,max_iter=300]", "logreg[C=0.1,max_iter=300]"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BenchError, match="does not parse"):
        load_grid_file(tmp_path / "bad.json")
    with pytest.raises(BenchError, match="cannot read grid file"):
        load_grid_file(tmp_path / "missing.json")
