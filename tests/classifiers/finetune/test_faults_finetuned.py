"""Issue 14, item 7, fine-tuned kind: the network's input size decides how large the decoded
images are, so a crafted `model.keras` whose input is huge or not RGB is refused in one line."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from featurestore.fsutil import file_sha256
from tests.faults import run_cli

pytestmark = pytest.mark.xdist_group("finetune")


def with_layer_config(model: Path, class_name: str, key: str, value: Any) -> None:
    """Set `key` of the (first) `class_name` layer in model.keras' config, and make
    metadata.json's sha256 agree, as an attacker would."""
    archive = model / "model.keras"
    with zipfile.ZipFile(archive) as z:
        members = {name: z.read(name) for name in z.namelist()}
    config = json.loads(members["config.json"])
    layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == class_name)
    layer["config"][key] = value
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    metadata = json.loads((model / "metadata.json").read_text())
    metadata["payload"]["model.keras"] = file_sha256(archive)
    (model / "metadata.json").write_text(json.dumps(metadata))


def with_input_shape(model: Path, shape: list[Any]) -> None:
    with_layer_config(model, "InputLayer", "batch_shape", shape)


def with_recorded_input_size(model: Path, size: int) -> None:
    """Change the store input size metadata.json records (metadata is covered by no hash)."""
    metadata = json.loads((model / "metadata.json").read_text())
    metadata["store"]["fingerprint"]["input_size"] = size
    (model / "metadata.json").write_text(json.dumps(metadata))


SHAPE_REFUSED = "model.keras takes inputs of shape ({}); expected (S, S, 3) with S from 32 to 1024"
CASES = {
    # Keras itself would build this network and then fail on the flatten head's weights; the
    # input is refused from model.keras' config before Keras reads it.
    "huge": (
        lambda m: with_input_shape(m, [None, 100_000, 100_000, 3]),
        SHAPE_REFUSED.format("100000, 100000, 3"),
    ),
    "grey": (lambda m: with_input_shape(m, [None, 64, 64, 1]), SHAPE_REFUSED.format("64, 64, 1")),
    "tiny": (lambda m: with_input_shape(m, [None, 16, 16, 3]), SHAPE_REFUSED.format("16, 16, 3")),
    "not-square": (lambda m: with_input_shape(m, [None, 64, 32, 3]), SHAPE_REFUSED.format("64, 32, 3")),
    "text": (lambda m: with_input_shape(m, [None, "64", "64", 3]), SHAPE_REFUSED.format("'64', '64', 3")),
    "other-than-recorded": (
        lambda m: with_input_shape(m, [None, 64, 64, 3]),
        "model.keras takes 64 px inputs; metadata.json's store.fingerprint.input_size is 32",
    ),
    # Keras would allocate (and fill) 512 x 10^9 floats for this layer before reading the
    # weights; a size that fits is used here, refused the same way, by the same check.
    "dense-units": (
        lambda m: with_layer_config(m, "Dense", "units", 9),
        "config.json asks for layers model.weights.h5 does not store: Dense(units=9)",
    ),
    "conv-filters": (
        lambda m: with_layer_config(m, "Conv2D", "filters", 65),
        "config.json asks for layers model.weights.h5 does not store: Conv2D(kernel_size=(3, 3), filters=65)",
    ),
    "recorded-huge": (lambda m: with_recorded_input_size(m, 100_000), "input_size"),
    "recorded-other": (
        lambda m: with_recorded_input_size(m, 64),
        "model.keras takes 32 px inputs; metadata.json's store.fingerprint.input_size is 64",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_finetuned_network_with_a_crafted_input_is_refused_in_one_line(
    from_cache: dict, tiny_store: Path, tmp_path: Path, case: str
) -> None:
    edit, message = CASES[case]
    model = tmp_path / "model"
    shutil.copytree(from_cache["model_path"], model)
    edit(model)
    result = run_cli("predict", model, tiny_store, "-o", tmp_path / "out.csv")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {model}") and message in lines[0], result.stderr
    assert "Keras" not in lines[0]  # refused by our checks, not by Keras part-way through a build
    assert not (tmp_path / "out.csv").exists()


def test_the_untouched_finetuned_model_predicts(from_cache: dict, tiny_store: Path, tmp_path: Path) -> None:
    """The checks refuse crafted folders, not what `finetune` writes."""
    result = run_cli("predict", from_cache["model_path"], tiny_store, "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "out.csv").read_text().splitlines()) > 1
