"""Issue 14, item 9: Pillow's bomb warning stays off stderr (the bomb is a failure reason), a
labeled manifest's row with an empty label is a failure, and a class folder without images is
no class. (The plots of a killed `train`: test_faults_leftovers.)"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from PIL import Image

from featurestore.store import open_store
from tests.conftest import write_image
from tests.faults import command, extract_args, image_tree, run_cli


def test_a_decompression_bomb_is_a_failure_reason_and_pillow_prints_nothing(tmp_path: Path) -> None:
    source = image_tree(tmp_path / "images", count=4)
    # 90.25 million pixels: above Pillow's warning limit (89.5 M), below its error limit (2x).
    Image.new("1", (9500, 9500)).save(source / "cats" / "bomb.png")
    store = tmp_path / "store"
    args = command(*extract_args(source, store))
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "DecompressionBombWarning" not in result.stderr and "warn" not in result.stderr, result.stderr
    reason = open_store(store).failures["cats/bomb.png"]["reason"]
    assert reason == "decompression bomb: 90250000 pixels > limit 89478485"


def test_a_labeled_manifests_row_with_an_empty_label_is_a_failure(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / f"{i}.png", seed=i)
    manifest = tmp_path / "images.csv"
    manifest.write_text("path,label\n0.png,cats\n1.png,dogs\n2.png,\n3.png,  \n")
    store = tmp_path / "store"
    result = run_cli(*extract_args(manifest, store, "--json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["failures"] == {"2.png": "empty label (line 4)", "3.png": "empty label (line 5)"}
    opened = open_store(store)
    assert opened.class_names == ("cats", "dogs")
    assert sorted(row["labels"] for row in opened.live_rows()) == ["cats", "dogs"]  # no unlabeled row


def test_a_class_folder_without_images_is_no_class_in_the_store_or_the_model(tmp_path: Path) -> None:
    source = image_tree(tmp_path / "images", count=12)
    (source / "birds").mkdir()  # empty
    (source / "fish").mkdir()
    (source / "fish" / "notes.txt").write_text("no image here")
    (source / "frogs").mkdir()
    os.symlink(tmp_path / "gone.png", source / "frogs" / "gone.png")  # unreadable: a broken link
    store = tmp_path / "store"
    result = run_cli(*extract_args(source, store))
    assert result.returncode == 0, result.stderr
    assert open_store(store).class_names == ("cats", "dogs")
    assert open_store(store).failures["frogs/gone.png"]["reason"] == "broken symbolic link"
    model = tmp_path / "model"
    trained = run_cli("train", store, "-c", "logreg", "-o", model)
    assert trained.returncode == 0, trained.stderr
    assert json.loads((model / "metadata.json").read_text())["class_names"] == ["cats", "dogs"]
