"""Tiny real stores for the benchmark tests: random maps whose mean depends on the class."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from featurestore.fingerprint import Fingerprint
from featurestore.splits import SplitFractions, split_of
from featurestore.writer import Row, StoreWriter

#: Cheap classifiers for the runs: a linear model and neighbours (a 5-tree forest via a grid).
CHEAP = ("logreg", "knn")
SMALL_FOREST = {"random-forest": {"n_estimators": ["5"]}}


def write_store(
    path: Path,
    n: int = 72,
    classes: Sequence[str] = ("cats", "dogs"),
    shape: tuple[int, int, int] = (2, 2, 16),
    separation: float = 0.6,
    seed: int = 0,
    order: Sequence[int] | None = None,
    piece_rows: int = 25,
    maps_seed: int | None = None,
    flip_views: bool = False,
    images: Sequence[int] | None = None,
    views: int = 0,
) -> Path:
    """A committed store of `n` rows in pieces of `piece_rows`, written in the row `order` given.

    Like `featurestore.testing.make_store`, but an image's id follows its content (row index
    and seed) rather than its position, so that two stores written in different orders hold
    the same images, as two extractions of one folder would. `maps_seed` draws other maps for
    the same images (another extraction setting), `flip_views` stores mirrored maps too, and
    `images` keeps only those row indices (a store extracted part of the way); `views` stores
    that many augmented views' maps per image (close to the image's, unique to each view).
    """
    rng = np.random.default_rng(seed if maps_seed is None else maps_seed)
    labels = np.arange(n) % len(classes)
    features = rng.normal(size=(n, *shape)).astype(np.float32) + separation * labels[:, None, None, None]
    features = np.abs(features)  # VGG maps are ReLU outputs
    fractions = SplitFractions()
    rows = []
    for i in order if order is not None else range(n):
        if images is not None and i not in images:
            continue
        maps = {"features": features[i]}
        if flip_views:
            maps["flipped/features"] = features[i][:, ::-1].copy()
        for k in range(1, views + 1):
            maps[f"views/{k}/features"] = (features[i] * (1.0 + 0.01 * k) + 0.001 * k).astype(np.float32)
        image_id = hashlib.sha256(f"{seed}-image-{i}".encode()).hexdigest()
        rows.append(
            Row(
                relpath=f"{classes[labels[i]]}/{i:06d}.jpg",
                image_id=image_id,
                label=classes[labels[i]],
                split=split_of(image_id, fractions),
                size=0,
                mtime_ns=0,
                maps=maps,
            )
        )
    fingerprint = Fingerprint(weights_sha256="0" * 64, input_size=64, flip_views=flip_views, views=views)
    with StoreWriter(
        path, fingerprint=fingerprint, split_fractions=fractions, source_root="", class_names=list(classes)
    ) as writer:
        for start in range(0, n, piece_rows):
            writer.commit_rows(rows[start : start + piece_rows])
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """72 rows of (2, 2, 16) maps, two classes, the stable hash split, three pieces."""
    return write_store(tmp_path_factory.mktemp("bench") / "tiny.store")
