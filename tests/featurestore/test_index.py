"""The store index: one checksummed file of the small columns, read instead of every piece."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore.fingerprint import Fingerprint
from featurestore.format import FORMAT, MANIFEST, StoreError, read_manifest
from featurestore.splits import SPLITS, SplitFractions
from featurestore.store import open_store
from featurestore.testing import cats_dogs_writer
from featurestore.verify import verify_store
from featurestore.writer import Row, StoreWriter

FP = Fingerprint(weights_sha256="b" * 64, input_size=32)


def row(relpath: str, value: float, *, split: str = "train", label: str | None = "cats") -> Row:
    return Row(
        relpath=relpath,
        image_id=(relpath.encode().hex() * 64)[:64],
        label=label,
        split=split,
        size=len(relpath),
        mtime_ns=int(value * 1000),
        maps={"features": np.full((1, 1, 4), value, np.float32)},
    )


def writer(path: Path, **kwargs) -> StoreWriter:
    return cats_dogs_writer(path, FP, **kwargs)


def history(path: Path) -> None:
    """Three runs: rows added, replaced, deleted, and one re-added after its deletion."""
    with writer(path) as w:
        w.commit_rows([row(f"cats/{i}.jpg", i, split=SPLITS[i % 3]) for i in range(10)])
        w.commit_rows([row("dogs/x.jpg", 50, label="dogs", split="test"), row("é/ü.jpg", 51, label=None)])
    with writer(path) as w:
        w.commit_rows([row("cats/1.jpg", 100)], deleted=["cats/2.jpg", "cats/3.jpg"])
    with writer(path) as w:
        w.commit_rows([row("cats/3.jpg", 300)], deleted=["dogs/x.jpg"])


def view(path: Path) -> dict[str, tuple]:
    data = open_store(path).load()
    return {
        p: (float(f.ravel()[0]), int(label), image_id, split)
        for p, f, label, image_id, split in zip(
            data.paths, data.features, data.labels, data.ids, data.splits, strict=True
        )
    }


EXPECTED = {
    **{f"cats/{i}.jpg": float(i) for i in (0, 4, 5, 6, 7, 8, 9)},
    "cats/1.jpg": 100.0,
    "cats/3.jpg": 300.0,
    "é/ü.jpg": 51.0,
}


def test_each_run_leaves_an_index_of_every_piece_and_the_manifest_forgets_folded_deletions(
    tmp_path: Path,
) -> None:
    history(tmp_path / "s")
    manifest = read_manifest(tmp_path / "s")
    assert manifest.index is not None and manifest.index.pieces == len(manifest.pieces)
    assert manifest.deleted == {}  # folded into the index's live mask
    got = view(tmp_path / "s")
    assert {p: v[0] for p, v in got.items()} == EXPECTED
    assert got["é/ü.jpg"][1] == -1 and got["cats/1.jpg"][1] == 0
    store = open_store(tmp_path / "s")
    assert store.counts()["train"]["cats"] == sum(1 for p, v in got.items() if v[3] == "train" and v[1] == 0)
    assert verify_store(tmp_path / "s") == ([], [])


def test_the_index_gives_the_same_view_as_reading_every_piece(tmp_path: Path) -> None:
    """A store whose manifest names no index (an older format) is read from its pieces: same
    rows, same digest. (Deletions older than the index live only in the index's mask.)"""
    with writer(tmp_path / "s") as w:
        w.commit_rows([row(f"cats/{i}.jpg", i, split=SPLITS[i % 3]) for i in range(10)])
        w.commit_rows([row("dogs/x.jpg", 50, label="dogs", split="test"), row("é/ü.jpg", 51, label=None)])
    with writer(tmp_path / "s") as w:
        w.commit_rows([row("cats/1.jpg", 100), row("cats/3.jpg", 300)])
    with_index = open_store(tmp_path / "s")
    raw = json.loads((tmp_path / "s" / MANIFEST).read_bytes())
    raw["index"] = None
    (tmp_path / "s" / MANIFEST).write_text(json.dumps(raw))
    from_pieces = open_store(tmp_path / "s")
    assert from_pieces.digest == with_index.digest
    assert view(tmp_path / "s") == {p: v for p, v in view_of(with_index).items()}


def view_of(store) -> dict[str, tuple]:
    data = store.load()
    return {
        p: (float(f.ravel()[0]), int(label), image_id, split)
        for p, f, label, image_id, split in zip(
            data.paths, data.features, data.labels, data.ids, data.splits, strict=True
        )
    }


def test_a_store_of_the_old_format_is_read_then_upgraded_by_the_next_writer(tmp_path: Path) -> None:
    """Format 1: no index, pieces with variable-length strings."""
    store = tmp_path / "s"
    (store / "pieces").mkdir(parents=True)
    text = h5py.string_dtype("utf-8")
    with h5py.File(store / "pieces" / "p1.h5", "w") as f:
        f.create_dataset("ids", data=["ab" * 32, "cd" * 32], dtype=text)
        f.create_dataset("paths", data=["cats/a.jpg", "dogs/b.jpg"], dtype=text)
        f.create_dataset("labels", data=["cats", "dogs"], dtype=text)
        f.create_dataset("splits", data=["train", "test"], dtype=text)
        f.create_dataset("sizes", data=np.array([1, 2], np.int64))
        f.create_dataset("mtime_ns", data=np.array([3, 4], np.int64))
        f.create_dataset("features", data=np.ones((2, 1, 1, 4), np.float32), fletcher32=True)
    from featurestore.fsutil import file_sha256

    manifest = {
        "format": "featurestore.store/1",
        "generation": 1,
        "fingerprint": FP.to_dict(),
        "class_names": ["cats", "dogs"],
        "source_root": "/src",
        "split_fractions": SplitFractions().to_dict(),
        "pieces": [
            {
                "file": "pieces/p1.h5",
                "rows": 2,
                "sha256": file_sha256(store / "pieces" / "p1.h5"),
                "generation": 1,
            }
        ],
        "deleted": {},
        "failures": {},
    }
    (store / MANIFEST).write_text(json.dumps(manifest))
    old = open_store(store)
    assert sorted(old.load().paths) == ["cats/a.jpg", "dogs/b.jpg"] and old.load().ids[0] == "ab" * 32
    with writer(store):
        pass  # nothing to extract: the writer still leaves an index
    upgraded = read_manifest(store)
    assert json.loads((store / MANIFEST).read_bytes())["format"] == FORMAT
    assert upgraded.index is not None and upgraded.index.rows == 2
    assert open_store(store).digest == old.digest


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def chunk_offset(path: Path, dataset: str) -> int:
    with h5py.File(path, "r") as f:
        return f[dataset].id.get_chunk_info(0).byte_offset


def test_a_damaged_index_is_named_and_the_next_writer_rebuilds_it(tmp_path: Path) -> None:
    history(tmp_path / "s")
    index = tmp_path / "s" / read_manifest(tmp_path / "s").index.file
    flip_byte(index, chunk_offset(index, "paths") + 3)
    with pytest.raises(StoreError, match=rf"{index.name}: index is damaged"):
        open_store(tmp_path / "s")
    assert any("index is damaged" in finding for finding in verify_store(tmp_path / "s")[0])
    with writer(tmp_path / "s"):
        pass
    # Rebuilt from the pieces: every newest row is right; deletions folded into the lost index
    # come back until the next extract's diff deletes them again (their files are gone).
    rebuilt = {p: v[0] for p, v in view(tmp_path / "s").items()}
    assert rebuilt == {**EXPECTED, "cats/2.jpg": 2.0, "dogs/x.jpg": 50.0}
    assert verify_store(tmp_path / "s") == ([], [])


def test_a_flipped_byte_in_a_pieces_paths_is_caught_when_read(tmp_path: Path) -> None:
    """Before: variable-length strings carry no checksum, and damage was served silently."""
    with writer(tmp_path / "s") as w:
        w.commit_rows([row(f"cats/{i}.jpg", i) for i in range(4)])
    manifest = read_manifest(tmp_path / "s")
    piece = tmp_path / "s" / manifest.pieces[0].file
    flip_byte(piece, chunk_offset(piece, "paths") + 1)
    raw = json.loads((tmp_path / "s" / MANIFEST).read_bytes())
    raw["index"] = None  # make readers read the piece's own columns
    (tmp_path / "s" / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(StoreError, match=rf"{piece.name}: committed piece is damaged"):
        open_store(tmp_path / "s")


def test_a_flipped_byte_in_the_maps_names_the_piece(tmp_path: Path) -> None:
    with writer(tmp_path / "s") as w:
        w.commit_rows([row(f"cats/{i}.jpg", i) for i in range(4)])
    piece = tmp_path / "s" / read_manifest(tmp_path / "s").pieces[0].file
    flip_byte(piece, chunk_offset(piece, "features") + 2)
    store = open_store(tmp_path / "s")  # the small columns come from the intact index
    with pytest.raises(StoreError, match=rf"{piece.name}: features cannot be read, the piece is damaged"):
        store.load("train")
