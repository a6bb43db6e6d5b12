"""Issue 14, item 7: a model folder's metadata is not covered by any secret, so every field
that drives loading or allocation is checked (types, ranges) and a crafted folder is refused
by `predict` in one line; a disguised Lambda layer too."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from featurestore.fsutil import file_sha256
from tests.classifiers.conftest import CLASS_NAMES, make_maps
from tests.faults import run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny store, a Keras head (`dense`) and a scikit-learn model (`logreg`) trained on it."""
    from featurestore.testing import make_store

    root = tmp_path_factory.mktemp("models")
    X, y = make_maps(60, seed=1)
    make_store(root / "store", X, y, CLASS_NAMES, splits=["train"] * 36 + ["validation"] * 12 + ["test"] * 12)
    for name, params in (("dense", ["hidden=8", "epochs=2"]), ("logreg", [])):
        args = ["train", root / "store", "-c", name, "-o", root / name]
        result = run_cli(*args, *(p for param in params for p in ("-p", param)))
        assert result.returncode == 0, result.stderr
    return root


def in_metadata(*keys: str, value: Any) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        metadata = json.loads((model / "metadata.json").read_text())
        node = metadata
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        (model / "metadata.json").write_text(json.dumps(metadata))

    return edit


def in_keras_config(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Edit head.keras' config.json and make metadata.json's sha256 agree, as an attacker would."""

    def edit(model: Path) -> None:
        archive = model / "head.keras"
        with zipfile.ZipFile(archive) as z:
            members = {name: z.read(name) for name in z.namelist()}
        config = json.loads(members["config.json"])
        change(config)
        members["config.json"] = json.dumps(config).encode()
        with zipfile.ZipFile(archive, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
        metadata = json.loads((model / "metadata.json").read_text())
        metadata["payload"]["head.keras"] = file_sha256(archive)
        (model / "metadata.json").write_text(json.dumps(metadata))

    return edit


def weights_bomb(model: Path) -> None:
    """head.keras with a model.weights.h5 of 50 MB of zeros deflated to 50 kB, sha256 agreeing."""
    archive = model / "head.keras"
    with zipfile.ZipFile(archive) as z:
        members = {name: z.read(name) for name in z.namelist()}
    members["model.weights.h5"] = bytes(50_000_000)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    metadata = json.loads((model / "metadata.json").read_text())
    metadata["payload"]["head.keras"] = file_sha256(archive)
    (model / "metadata.json").write_text(json.dumps(metadata))


def dense_activation(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["activation"] = value

    return change


def dense_units(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")["config"][
            "units"
        ] = value

    return change


CASES = {
    "input-size": ("dense", in_metadata("store", "fingerprint", "input_size", value=100_000), "input_size"),
    "classes-text": ("logreg", in_metadata("classes", value="abc"), "classes must be"),
    "classes-out-of-range": ("logreg", in_metadata("classes", value=[0, 7]), "classes must be"),
    "class-names-twice": ("logreg", in_metadata("class_names", value=["a", "a"]), "class_names must be"),
    "features": ("logreg", in_metadata("features", value="../x"), "features must be"),
    "params-list": ("logreg", in_metadata("params", value=[]), "params must be an object"),
    "store-digest": ("logreg", in_metadata("store", "digest", value=7), "store.digest"),
    "payload-digest": ("logreg", in_metadata("payload", "estimator.skops", value=1), "payload values"),
    "head-class": ("dense", in_metadata("head", "class", value="Lambda"), "head.class"),
    "head-params": ("dense", in_metadata("head", "params", value="x"), "head.params"),
    "head-input": (
        "dense",
        in_metadata("head", "state", "input_shape_", value=[100_000, 100_000, 512]),
        "head.state.input_shape_",
    ),
    "head-features": ("dense", in_metadata("head", "state", "n_features_in_", value="x"), "n_features_in_"),
    "head-history": ("dense", in_metadata("head", "state", "history_", value="x"), "history_"),
    "head-dropout": ("dense", in_metadata("head", "params", "dropout", value=7), "dropout"),
    "head-classes": ("dense", in_metadata("head", "state", "classes_", value=[0, 1, 2]), "classes_"),
    # Keras would allocate the layer's kernel before reading the weights: refused before.
    "dense-units": ("dense", in_keras_config(dense_units(9)), "does not store: Dense(units=9)"),
    "dense-units-text": ("dense", in_keras_config(dense_units("9")), "does not store: Dense(units='9')"),
    "weights-bomb": ("dense", weights_bomb, "model.weights.h5 would inflate from"),
    "lambda-as-activation": ("dense", in_keras_config(dense_activation("lambda x: x")), "cannot be loaded"),
    "function-as-activation": (
        "dense",
        in_keras_config(dense_activation({"module": "builtins", "class_name": "function", "config": "eval"})),
        "refusing Keras objects",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_refuses_a_crafted_model_in_one_line(models: Path, tmp_path: Path, case: str) -> None:
    base, edit, message = CASES[case]
    model = tmp_path / "model"
    shutil.copytree(models / base, model)
    edit(model)
    result = run_cli("predict", model, models / "store", "-o", tmp_path / "out.csv")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and str(model) in lines[0] and message in lines[0], result.stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("base", ["dense", "logreg"])
def test_the_untouched_models_predict(models: Path, tmp_path: Path, base: str) -> None:
    """The checks refuse crafted folders, not what `train` writes."""
    result = run_cli("predict", models / base, models / "store", "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 61
