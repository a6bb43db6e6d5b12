"""Issue 14, item 7, fine-tuned kind: the network's input size decides how large the decoded
images are, so a crafted `model.keras` whose input is huge or not RGB is refused in one line."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from featurestore.fsutil import file_sha256
from tests.faults import run_cli

pytestmark = pytest.mark.xdist_group("finetune")


def with_input_shape(model: Path, shape: list[int | None]) -> None:
    """Set the network's input shape in model.keras and make metadata.json's sha256 agree."""
    archive = model / "model.keras"
    with zipfile.ZipFile(archive) as z:
        members = {name: z.read(name) for name in z.namelist()}
    config = json.loads(members["config.json"])
    [layer] = [layer for layer in config["config"]["layers"] if layer["class_name"] == "InputLayer"]
    layer["config"]["batch_shape"] = shape
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    metadata = json.loads((model / "metadata.json").read_text())
    metadata["payload"]["model.keras"] = file_sha256(archive)
    (model / "metadata.json").write_text(json.dumps(metadata))


@pytest.mark.parametrize("shape", [[None, 100_000, 100_000, 3], [None, 64, 64, 1], [None, 16, 16, 3]])
def test_a_finetuned_network_with_a_crafted_input_is_refused_in_one_line(
    from_cache: dict, tiny_store: Path, tmp_path: Path, shape: list[int | None]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(from_cache["model_path"], model)
    with_input_shape(model, shape)
    result = run_cli("predict", model, tiny_store, "-o", tmp_path / "out.csv")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    # Keras may refuse first (a flatten head's weights no longer fit), or our input check does.
    assert len(lines) == 1 and lines[0].startswith(f"Error: {model}"), result.stderr
    assert not (tmp_path / "out.csv").exists()
