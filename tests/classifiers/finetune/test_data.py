"""Epoch batches: reproducible per (seed, epoch), drawn from the stored views, bad rows skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from classifiers.finetune.data import CachedView, ImageRows, MapRows, RowsAt
from tests.conftest import write_image

pytestmark = pytest.mark.xdist_group("finetune")


def _map_rows(n: int = 40, views: int = 0) -> MapRows:
    """Rows with random maps, their flipped maps and `views` augmented views' maps."""
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(n, 2, 2, 3)).astype(np.float32)
    stored = [CachedView.loaded("flipped", rng.normal(size=maps.shape).astype(np.float32))]
    for k in range(1, views + 1):
        stored.append(CachedView.loaded(f"view {k}", rng.normal(size=maps.shape).astype(np.float32)))
    return MapRows(maps, np.array([f"{i}.png" for i in range(n)], dtype=object), np.arange(n) % 2, stored)


def _stored(rows: MapRows) -> list[np.ndarray]:
    """Every map stored per row: the original first, then each view's."""
    return [rows.maps, *(np.concatenate(list(view.blocks())) for view in rows.views)]


def _epoch(rows: MapRows, epoch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    batches = rows.for_epoch(epoch, seed, batch_size=8, augment=True)
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
    views = {m.tobytes() for m in _stored(rows)[1]}
    picked = [m.tobytes() for m in x]
    assert all(m in originals or m in views for m in picked)
    n_flipped = sum(m in views for m in picked)
    assert 0 < n_flipped < len(picked)
    mirrored = {m[:, ::-1].tobytes() for m in rows.maps}
    assert not mirrored & set(picked)


@pytest.mark.parametrize("seed", [0, 7])
def test_each_row_is_fed_one_of_its_own_stored_maps_drawn_from_seed_and_epoch(seed: int) -> None:
    rows = _map_rows(60, views=3)
    stored = _stored(rows)
    order, pick = rows.picks(2, seed)
    x, y = _epoch(rows, 2, seed)
    np.testing.assert_array_equal(y, rows.labels[order])
    for at, row in enumerate(order):  # the row's own map from the source its pick names
        np.testing.assert_array_equal(x[at], stored[pick[row]][row])
    assert set(pick.tolist()) == {0, 1, 2, 3, 4}  # the original, flipped and all three views
    again, other = rows.picks(2, seed), rows.picks(3, seed)
    np.testing.assert_array_equal(pick, again[1])
    np.testing.assert_array_equal(order, again[0])
    assert not np.array_equal(pick, other[1])
    np.testing.assert_array_equal(_epoch(rows, 2, seed)[0], x)  # the same epoch, the same maps


def test_streamed_views_feed_the_same_epochs_as_loaded_ones() -> None:
    loaded = _map_rows(50, views=2)
    streamed = MapRows(
        loaded.maps,
        loaded.relpaths,
        loaded.labels,
        [  # the same maps, read back in blocks of 16 rows on each call, as from the store
            CachedView(view.name, lambda maps=maps: (maps[i : i + 16] for i in range(0, len(maps), 16)))
            for view, maps in zip(loaded.views, _stored(loaded)[1:], strict=True)
        ],
    )
    for epoch in range(3):
        np.testing.assert_array_equal(_epoch(streamed, epoch)[0], _epoch(loaded, epoch)[0])


def test_rows_picked_out_of_larger_arrays_feed_what_a_copy_of_those_rows_feeds() -> None:
    whole = _map_rows(50, views=2)
    at = np.random.default_rng(1).permutation(50)[:23]
    picked = MapRows(whole.maps, whole.relpaths[at], whole.labels[at], whole.views, at=at)
    copied = MapRows(
        whole.maps[at],
        whole.relpaths[at],
        whole.labels[at],
        [CachedView.loaded(view.name, view.maps[at]) for view in whole.views],  # type: ignore[index]
    )
    for epoch in range(3):
        x, y = _epoch(picked, epoch)
        np.testing.assert_array_equal(x, _epoch(copied, epoch)[0])
        np.testing.assert_array_equal(y, _epoch(copied, epoch)[1])
    np.testing.assert_array_equal(
        np.concatenate(list(picked.in_order(8).inputs())), np.concatenate(list(copied.in_order(8).inputs()))
    )
    streamed = CachedView("view 1", lambda: iter([whole.maps]))
    with pytest.raises(ValueError, match="need every view loaded"):
        MapRows(whole.maps, whole.relpaths[at], whole.labels[at], [streamed], at=at)


def test_without_augment_or_views_batches_are_the_originals() -> None:
    rows = _map_rows(30, views=2)
    x, _ = _epoch(MapRows(rows.maps, rows.relpaths, rows.labels), 1)
    order, _ = rows.picks(1, 0)
    np.testing.assert_array_equal(x, rows.maps[order])
    batches = rows.for_epoch(1, 0, batch_size=8, augment=False)
    plain = np.concatenate([batches[i][0] for i in range(len(batches))])
    np.testing.assert_array_equal(plain, rows.maps[order])


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


def test_rows_at_fetch_the_picked_images_with_their_own_labels(tmp_path: Path) -> None:
    import hashlib

    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(6)]
    ids = np.array([hashlib.sha256(p.read_bytes()).hexdigest() for p in paths], dtype=object)
    pool = ImageRows(paths, np.array([p.name for p in paths], dtype=object), ids, np.zeros(6, int), 16, 2)
    at, labels = np.array([4, 1, 5]), np.array([1, 0, 1])
    fold = RowsAt(pool, at, labels)
    assert list(fold.relpaths) == ["4.png", "1.png", "5.png"] and len(fold) == 3
    batches = fold.for_epoch(2, seed=0, batch_size=2)
    order = np.random.default_rng([0, 2]).permutation(3)
    x = np.concatenate([batches[i][0] for i in range(len(batches))])
    y = np.concatenate([batches[i][1] for i in range(len(batches))])
    np.testing.assert_array_equal(x, pool.images[at[order]].astype(np.float32))  # type: ignore[index]
    np.testing.assert_array_equal(y, labels[order])
