"""`finetune --from-cache` on a store with augmented views (`extract --views 2 --flip-views`):
each epoch feeds every training image one of its stored block4_pool maps, the same ones for
the same (seed, epoch) whether the views are loaded once or read each epoch. (A run killed
with SIGKILL then resumed: test_resume.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.finetune.data import MapRows, map_rows
from tests.classifiers.finetune.conftest import VIEWS, built_once, finetune_cli, make_store

pytestmark = pytest.mark.xdist_group("finetune")


def _epoch(rows: MapRows, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    batches = rows.for_epoch(epoch, 0, batch_size=4, augment=True)
    xs, ys = zip(*(batches[i] for i in range(len(batches))), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_epochs_feed_the_stored_views_loaded_or_streamed_alike(views_store: Path) -> None:
    import featurestore

    store = featurestore.open_store(views_store)
    classes = np.arange(len(store.class_names))
    loaded = map_rows(store, "train", classes, augment=True)
    streamed = map_rows(store, "train", classes, augment=True, max_view_bytes=0)
    assert [v.name for v in loaded.views] == ["flipped", *(f"view {k}" for k in range(1, VIEWS + 1))]
    assert [v.name for v in streamed.views] == [v.name for v in loaded.views]
    stored = [
        store.load("train", layer="block4_pool", **where).features
        for where in ({}, {"flipped": True}, *({"view": k} for k in range(1, VIEWS + 1)))
    ]
    fed = []
    for epoch in range(3):
        x, _ = _epoch(loaded, epoch)
        np.testing.assert_array_equal(_epoch(streamed, epoch)[0], x)
        order, pick = loaded.picks(epoch, 0)
        for at, row in enumerate(order):  # each image gets one of its own stored maps
            np.testing.assert_array_equal(x[at], stored[pick[row]][row])
        assert any(not np.array_equal(x[at], stored[0][row]) for at, row in enumerate(order))
        fed.append(pick)
    assert not np.array_equal(fed[0], fed[1])  # another draw each epoch
    assert {int(p) for pick in fed for p in pick} == set(range(VIEWS + 2))  # every stored map
    validation = map_rows(store, "validation", classes, augment=False)
    assert not validation.views
    np.testing.assert_array_equal(
        np.concatenate(list(validation.in_order(4).inputs())),
        store.load("validation", layer="block4_pool").features,
    )


def test_no_augment_records_no_views_and_augment_without_views_is_refused_in_one_line(
    views_store: Path, views_head: Path, tmp_path: Path
) -> None:
    report = finetune_cli(views_store, views_head, tmp_path / "plain", "--from-cache", "--no-augment")
    assert "cached_views" not in report["training"]

    bare = built_once(
        views_store.parent / "bare_store",
        lambda path: make_store(path.parent, flip_views=False, name=path.name),
    )
    from classifiers.cli import main

    args = ["finetune", str(bare), "--head", str(views_head), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*args, "--weights", "random", "--from-cache", "--augment"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "needs stored views to draw from" in lines[0] and "neither --flip-views nor --views K" in lines[0]
    assert "--no-augment" in lines[0] and "--flip-views, --views K or both" in lines[0]
    assert not (tmp_path / "out").exists()
