"""The `verify`, `export` and `demo` commands, run in-process on the console script's group."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner, Result

from classifiers.cli import main
from featurestore.store import open_store
from tests.conftest import write_image


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 12 tiny images in three pieces of 4, extracted once with random weights at 32 px."""
    base = tmp_path_factory.mktemp("commands")
    for i in range(12):
        write_image(base / "images" / ("cats", "dogs")[i % 2] / f"{i:02d}.png", seed=i)
    args = ["extract", base / "images", "--store", base / "store", "--weights", "random"]
    with pytest.MonkeyPatch.context() as patch:  # never the user's cache
        patch.setenv("FEATURESTORE_HOME", str(base / "home"))
        result = invoke(*args, "--input-size", "32", "--batch-size", "4", "--commit-every", "4")
    assert result.exit_code == 0, result.output
    return base / "store"


@pytest.fixture
def store(extracted: Path, tmp_path: Path) -> Path:
    """A private copy of the extracted store, free to damage."""
    return Path(shutil.copytree(extracted, tmp_path / "store"))


def pieces(store: Path) -> list[str]:
    return [piece.file for piece in open_store(store).manifest.pieces]


def test_verify_says_ok_on_a_clean_store(store: Path) -> None:
    assert len(pieces(store)) == 3
    result = invoke("verify", store)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{store}: ok\n"


def test_verify_names_the_piece_whose_features_lost_a_byte(store: Path) -> None:
    first, *others = pieces(store)
    with h5py.File(store / first, "r") as f:
        chunk = f["features"].id.get_chunk_info(0)  # where the first rows' maps sit in the file
    raw = bytearray((store / first).read_bytes())
    raw[chunk.byte_offset + chunk.size // 2] ^= 0x01
    (store / first).write_bytes(bytes(raw))

    result = invoke("verify", store)
    assert result.exit_code == 1
    damaged = result.stdout.splitlines()
    assert f"damaged: {first}: sha256 differs from the manifest" in damaged
    # HDF5's fletcher32 checksum catches it too, as a full read of the features
    assert any(line.startswith(f"damaged: {first}: cannot be read (") for line in damaged)
    assert all(line.startswith(f"damaged: {first}: ") for line in damaged)  # the other pieces are fine
    assert not any(other in result.output for other in others)


def test_verify_names_a_missing_piece(store: Path) -> None:
    gone = pieces(store)[1]
    (store / gone).unlink()
    result = invoke("verify", store)
    assert result.exit_code == 1
    assert result.stdout == f"damaged: {gone}: missing\n"


def test_verify_notes_a_leftover_piece_but_passes(store: Path) -> None:
    (store / "pieces" / "orphan.h5").write_bytes(b"renamed but never committed")
    result = invoke("verify", store)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "note: pieces/orphan.h5: not in the manifest (left by an interrupted run; the next run deletes it)",
        f"{store}: ok",
    ]


def test_verify_of_a_folder_that_is_no_store_is_a_one_line_error(tmp_path: Path) -> None:
    result = invoke("verify", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path}: not a feature store (no manifest.json)\n"


def test_export_writes_one_plain_hdf5_file_matching_the_store(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "pets.h5"
    out.parent.mkdir()
    result = invoke("export", store, out)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote 12 rows to {out}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["pets.h5"]  # no temporary file left

    opened = open_store(store)
    data = opened.load()
    with h5py.File(out, "r") as f:
        assert set(f) == {"features", "labels", "ids", "paths", "split"}
        assert f["features"].dtype == np.float32 and f["labels"].dtype == np.int64
        np.testing.assert_array_equal(f["features"][()], data.features)
        np.testing.assert_array_equal(f["labels"][()], data.labels)
        assert list(f["ids"].asstr()[()]) == list(data.ids)
        assert list(f["paths"].asstr()[()]) == list(data.paths)
        assert list(f["split"].asstr()[()]) == list(data.splits)
        attrs = dict(f.attrs)
    assert json.loads(attrs.pop("class_names")) == list(opened.class_names) == ["cats", "dogs"]
    assert json.loads(attrs.pop("fingerprint")) == opened.fingerprint.to_dict()
    assert attrs.pop("fingerprint_digest") == opened.fingerprint.digest
    assert attrs.pop("store_digest") == opened.digest
    assert set(attrs) == {"layout"}


def test_export_into_a_missing_folder_is_a_one_line_error(store: Path, tmp_path: Path) -> None:
    result = invoke("export", store, tmp_path / "missing" / "pets.h5")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {tmp_path / 'missing' / 'pets.h5'}: cannot write export")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
    assert not (tmp_path / "missing").exists()


def test_demo_draws_extracts_and_reports_the_truncated_file(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = invoke("demo", folder, "--weights", "random", "--per-class", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"drew 6 sample images (and one truncated file) under {folder / 'images'}"
    assert lines[1].startswith("discovered 7, new 7,") and "failed 1;" in lines[1]
    assert "6 through the model" in lines[1]
    assert lines[2].startswith(f"store {folder / 'store'}: 6 images,")
    assert "failures 1" in lines
    assert lines[-1].startswith("  circles/truncated.jpg: ")
    truncated = folder / "images" / "circles" / "truncated.jpg"
    skipped = [line for line in result.stderr.splitlines() if not line.startswith("extract: ")]
    assert skipped[0].startswith(f"skipped {truncated}: ")  # one line on stderr as it happens

    store = open_store(folder / "store")
    assert len(store) == 6 and store.class_names == ("circles", "squares")
    assert set(store.failures) == {"circles/truncated.jpg"}
    assert sorted(store.load().paths) == sorted(
        str(p.relative_to(folder / "images")) for p in (folder / "images").rglob("*_*.*")
    )
