"""The store on disk: commits, live view, split reads, digest, export and verify."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore.export import export_store
from featurestore.fingerprint import Fingerprint
from featurestore.lock import LockedError
from featurestore.store import StoreError, open_store
from featurestore.testing import cats_dogs_writer, make_store
from featurestore.verify import verify_store
from featurestore.writer import Row, StoreWriter

FP = Fingerprint(weights_sha256="a" * 64, input_size=32)


def row(
    relpath: str, value: float, split: str = "train", label: str | None = "cats", image_id: str | None = None
) -> Row:
    return Row(
        relpath=relpath,
        image_id=image_id or (relpath.encode().hex() * 64)[:64],
        label=label,
        split=split,
        size=1,
        mtime_ns=1,
        maps={"features": np.full((1, 1, 512), value, np.float32)},
    )


def writer(path: Path, **kwargs) -> StoreWriter:
    return cats_dogs_writer(path, kwargs.pop("fingerprint", FP), **kwargs)


def test_commits_build_the_live_view_newest_row_wins_and_deletions_hide_rows(tmp_path: Path) -> None:
    with writer(tmp_path / "s") as w:
        w.commit_rows([row("a.jpg", 1.0), row("b.jpg", 2.0, split="test")])
        w.commit_rows([row("a.jpg", 3.0)])  # a.jpg changed
        w.commit_rows([], deleted=["b.jpg"])
    store = open_store(tmp_path / "s")
    data = store.load()
    assert list(data.paths) == ["a.jpg"]
    assert data.features[0, 0, 0, 0] == 3.0
    with writer(tmp_path / "s") as w:
        w.commit_rows([row("b.jpg", 5.0, split="test")])  # re-added after deletion
    assert sorted(open_store(tmp_path / "s").load().paths) == ["a.jpg", "b.jpg"]


def test_load_reads_only_the_asked_split_with_labels_as_class_indices(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.random((60, 1, 1, 512), dtype=np.float32)
    labels = np.arange(60) % 2
    splits = ["train", "validation", "test"] * 20
    store = make_store(tmp_path / "s", features, labels, ["cats", "dogs"], splits)
    test = store.load("test")
    assert len(test) == 20 and set(test.splits) == {"test"}
    expected = {f"{['cats', 'dogs'][labels[i]]}/{i:06d}.jpg": features[i] for i in range(2, 60, 3)}
    for path, maps, label in zip(test.paths, test.features, test.labels, strict=True):
        np.testing.assert_array_equal(maps, expected[path])
        assert store.class_names[label] == path.split("/")[0]
    both = store.load(["train", "validation"])
    assert len(both) == 40
    batches = list(store.iter_batches("train", batch_size=7))
    assert [len(b) for b in batches] == [7, 7, 6]
    assert np.concatenate([b.features for b in batches]).shape == (20, 1, 1, 512)
    with pytest.raises(StoreError, match="unknown split"):
        store.load("training")


def test_digest_names_the_content(tmp_path: Path) -> None:
    features = np.ones((4, 1, 1, 512), np.float32)
    a = make_store(tmp_path / "a", features, np.array([0, 1, 0, 1]), ["cats", "dogs"])
    b = make_store(tmp_path / "b", features, np.array([0, 1, 0, 1]), ["cats", "dogs"])
    c = make_store(tmp_path / "c", features, np.array([0, 1, 1, 1]), ["cats", "dogs"])
    assert a.digest == b.digest != c.digest


def test_other_settings_are_refused_unless_rebuilt(tmp_path: Path) -> None:
    with writer(tmp_path / "s") as w:
        w.commit_rows([row("a.jpg", 1.0)])
    other = Fingerprint(weights_sha256="b" * 64, input_size=32)
    with (
        pytest.raises(StoreError, match=r"weights_sha256.*--rebuild"),
        writer(tmp_path / "s", fingerprint=other),
    ):
        pass
    with writer(tmp_path / "s", fingerprint=other, rebuild=True) as w:
        w.commit_rows([row("c.jpg", 1.0)])
    store = open_store(tmp_path / "s")
    assert store.fingerprint.weights_sha256 == "b" * 64
    assert list(store.load().paths) == ["c.jpg"]


def test_a_second_writer_is_refused_at_once(tmp_path: Path) -> None:
    with (
        writer(tmp_path / "s"),
        pytest.raises(LockedError, match="another extract"),
        writer(tmp_path / "s"),
    ):
        pass


def test_readers_see_the_last_commit_and_leftovers_are_cleaned(tmp_path: Path) -> None:
    with writer(tmp_path / "s") as w:
        w.commit_rows([row("a.jpg", 1.0)])
        snapshot = open_store(tmp_path / "s")
        (tmp_path / "s" / ".tmp" / "half.h5").write_bytes(b"partial")
        (tmp_path / "s" / "pieces" / "orphan.h5").write_bytes(b"renamed but never committed")
        w.commit_rows([row("b.jpg", 1.0)])
        assert len(snapshot) == 1 and len(open_store(tmp_path / "s")) == 2
    findings, notes = verify_store(tmp_path / "s")
    assert findings == [] and len(notes) == 2  # leftovers are reported (issue 14, item 6)
    assert "orphan.h5" in notes[0] and ".tmp/half.h5" in notes[1]
    with writer(tmp_path / "s"):
        pass
    assert not (tmp_path / "s" / "pieces" / "orphan.h5").exists()
    assert list((tmp_path / "s" / ".tmp").iterdir()) == []


def test_verify_finds_a_flipped_byte_and_a_missing_piece(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", np.ones((40, 1, 1, 512), np.float32), np.zeros(40, int), ["cats"])
    assert verify_store(store.path) == ([], [])
    piece = store.path / store.manifest.pieces[0].file
    raw = bytearray(piece.read_bytes())
    raw[-5000] ^= 0xFF
    piece.write_bytes(bytes(raw))
    findings, _ = verify_store(store.path)
    assert any("sha256 differs" in f for f in findings)
    piece.unlink()
    assert verify_store(store.path)[0] == [f"{store.manifest.pieces[0].file}: missing"]


def test_verify_finds_negative_and_nan_features(tmp_path: Path) -> None:
    features = np.ones((4, 1, 1, 512), np.float32)
    features[1, 0, 0, 3] = -1
    features[2, 0, 0, 0] = np.nan
    store = make_store(tmp_path / "s", features, np.zeros(4, int), ["cats"])
    findings, _ = verify_store(store.path)
    assert any("NaN" in f for f in findings) and any("negative" in f for f in findings)


def test_export_is_plain_hdf5(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    features = rng.random((10, 1, 1, 512), dtype=np.float32)
    store = make_store(tmp_path / "s", features, np.arange(10) % 2, ["cats", "dogs"])
    assert export_store(store, tmp_path / "out.h5") == 10
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["features"].shape == (10, 1, 1, 512)
        assert f["labels"].dtype == np.int64 and sorted(f["labels"][()]) == [0] * 5 + [1] * 5
        assert len(f["ids"]) == len(f["paths"]) == len(f["split"]) == 10
        assert json.loads(f.attrs["class_names"]) == ["cats", "dogs"]
        assert json.loads(f.attrs["fingerprint"])["weights_sha256"] == "0" * 64
        by_path = dict(zip(f["paths"].asstr()[()], f["features"][()], strict=True))
    for i in range(10):
        np.testing.assert_array_equal(by_path[f"{['cats', 'dogs'][i % 2]}/{i:06d}.jpg"], features[i])


def test_opening_a_folder_that_is_no_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a feature store"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not a valid featurestore manifest"):
        open_store(tmp_path)
