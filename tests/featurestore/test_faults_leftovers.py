"""Issue 14, item 6: what a SIGKILL at each writer's temporary leaves is cleaned by the next
writer of the same kind, `verify` reports it meanwhile, and temporary names never collide."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore.fsutil import stale_temps
from featurestore.store import open_store
from tests.conftest import write_image
from tests.faults import Paused, extract_args, image_tree, run_cli

TEMP = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.(tmp|old)")


def leftovers(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if TEMP.match(entry.name))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leftovers")
    store = root / "store"
    result = run_cli(*extract_args(image_tree(root / "images"), store))
    assert result.returncode == 0, result.stderr
    return store


@pytest.fixture
def store(extracted: Path, tmp_path: Path) -> Path:
    """A private copy of the extracted store (its source stays where it was)."""
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(extracted, copy)
    return copy


def test_a_kill_during_the_manifest_write_is_reported_by_verify_and_cleaned_by_the_next_extract(
    store: Path, tmp_path: Path
) -> None:
    source = Path(open_store(store).source_root)
    write_image(source / "cats" / "new.png", seed=99, size=(40, 32))  # something to commit
    before = open_store(store).digest
    paused = Paused(extract_args(source, store), "before-rename:manifest.json", tmp_path / "paused")
    paused.kill()
    [temp] = leftovers(store)
    assert temp.startswith(".manifest.json.")
    assert open_store(store).digest == before  # the last commit is intact
    checked = run_cli("verify", store)
    assert checked.returncode == 0, checked.stderr
    assert f"note: {temp}" in checked.stdout  # reported, harmless
    again = run_cli(*extract_args(source, store))
    assert again.returncode == 0, again.stderr
    assert leftovers(store) == [] and stale_temps(store) == []
    assert "cats/new.png" in set(open_store(store).load().paths)
    assert "note:" not in run_cli("verify", store).stdout


def test_a_killed_export_leaves_no_out_and_the_next_export_cleans_its_temp(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.h5"
    Paused(["export", store, out], "before-rename:out.h5", tmp_path / "paused").kill()
    assert not out.exists() and len(leftovers(tmp_path)) == 1
    result = run_cli("export", store, out)
    assert result.returncode == 0, result.stderr
    assert leftovers(tmp_path) == []
    with h5py.File(out) as f:
        assert len(f["features"]) == len(open_store(store))


def test_two_exports_to_one_out_at_once_both_finish_whole(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    first = Paused(["export", store, out], "before-rename:out.h5", tmp_path / "paused")
    second = run_cli("export", store, out)  # runs start to end while the first holds its temp
    assert second.returncode == 0, second.stderr
    assert len(leftovers(tmp_path)) == 1  # the live first export's temp is kept
    assert first.resume().returncode == 0
    assert leftovers(tmp_path) == []
    expected = open_store(store).load()
    with h5py.File(out) as f:
        order = np.argsort(f["paths"][()].astype(str))
        assert np.array_equal(f["features"][()][order], expected.features[np.argsort(expected.paths)])


@pytest.fixture
def trained(store: Path, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    result = run_cli("train", store, "-c", "logreg", "-o", model)
    assert result.returncode == 0, result.stderr
    return model


def predictions(model: Path, store: Path, out: Path) -> str:
    result = run_cli("predict", model, store, "-o", out)
    assert result.returncode == 0, result.stderr
    return out.read_text()


def test_a_killed_train_leaves_no_model_and_the_next_train_cleans_its_temp(
    store: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    paused = Paused(["train", store, "-c", "logreg", "-o", model], "before-rename:model", tmp_path / "p")
    [temp] = leftovers(tmp_path)
    # Item 9: the plots are in the folder before it is renamed into place.
    assert {"metadata.json", "confusion_matrix_test.png"} <= {p.name for p in (tmp_path / temp).iterdir()}
    paused.kill()
    assert not model.exists()
    result = run_cli("train", store, "-c", "logreg", "-o", model)
    assert result.returncode == 0, result.stderr
    assert leftovers(tmp_path) == []


def test_a_kill_between_the_two_renames_of_train_overwrite_leaves_a_model_under_its_name(
    store: Path, trained: Path, tmp_path: Path
) -> None:
    old_predictions = predictions(trained, store, tmp_path / "old.csv")
    args = ["train", store, "-c", "logreg", "-p", "C=0.001", "-o", trained, "--overwrite"]
    Paused(args, "between-renames:model", tmp_path / "paused").kill()
    assert not trained.exists()  # the old folder is aside, the new one not yet in
    assert len(leftovers(tmp_path)) == 2  # the old folder aside and the new one
    # The next start (here `predict`) puts the old model back: same predictions.
    assert predictions(trained, store, tmp_path / "again.csv") == old_predictions
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert leftovers(tmp_path) == []
    assert json.loads((trained / "metadata.json").read_text())["params"]["C"] == 0.001
