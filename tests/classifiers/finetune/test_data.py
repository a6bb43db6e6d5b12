"""Epoch batches: reproducible per (seed, epoch), flips from the stored views, bad rows skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from classifiers.finetune.data import ImageRows, MapRows
from tests.conftest import write_image

pytestmark = pytest.mark.xdist_group("finetune")


def _map_rows(n: int = 40) -> MapRows:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(n, 2, 2, 3)).astype(np.float32)
    flipped = rng.normal(size=(n, 2, 2, 3)).astype(np.float32)
    return MapRows(maps, flipped, np.array([f"{i}.png" for i in range(n)], dtype=object), np.arange(n) % 2)


def _epoch(rows: MapRows, epoch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    batches = rows.for_epoch(epoch, seed, batch_size=8, flip=True)
    xs, ys = zip(*(batches[i] for i in range(len(batches))), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_epochs_are_reproducible_and_differ_from_each_other() -> None:
    rows = _map_rows()
    first, again, second = _epoch(rows, 0), _epoch(rows, 0), _epoch(rows, 1)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], second[0])
    assert sorted(first[1]) == sorted(rows.labels)  # every row once


def test_flips_pick_the_stored_flipped_maps_never_mirrored_maps() -> None:
    rows = _map_rows()
    x, _ = _epoch(rows, 3)
    originals = {m.tobytes() for m in rows.maps}
    views = {m.tobytes() for m in rows.flipped}
    picked = [m.tobytes() for m in x]
    assert all(m in originals or m in views for m in picked)
    n_flipped = sum(m in views for m in picked)
    assert 0 < n_flipped < len(picked)
    mirrored = {m[:, ::-1].tobytes() for m in rows.maps}
    assert not mirrored & set(picked)


def test_unflipped_batches_are_the_originals_in_order() -> None:
    rows = _map_rows(10)
    batches = rows.in_order(batch_size=4)
    np.testing.assert_array_equal(np.concatenate(list(batches.inputs())), rows.maps)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0])  # kept in memory, decoded every batch
def test_image_rows_skip_changed_and_missing_files(tmp_path: Path, cache_bytes: int) -> None:
    import hashlib

    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    ids = np.array([hashlib.sha256(p.read_bytes()).hexdigest() for p in paths], dtype=object)
    shutil.copyfile(paths[0], paths[1])  # changed since "extraction"
    paths[2].unlink()
    rows = ImageRows(
        paths, np.array([p.name for p in paths], dtype=object), ids, np.arange(4) % 2, 32, 2, cache_bytes
    )
    assert set(rows.skipped) == {"1.png", "2.png"}
    assert "sha256" in rows.skipped["1.png"] and "not found" in rows.skipped["2.png"]
    assert list(rows.relpaths) == ["0.png", "3.png"]
    batch = rows.fetch(np.array([1, 0]))
    assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.float32
    from featurestore.images import load_image

    np.testing.assert_array_equal(batch[1], load_image(paths[0], 32))
