"""What `finetune-cv` trains and scores on: the train+validation images as `bench` orders them
(labelled, one row per image id, sorted by id), as cached maps and, for `--from-images`, as the
images themselves, row for row."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from classifiers.bench.folds import POOL_SPLITS, read_labelled
from classifiers.errors import FinetuneError
from classifiers.finetune.data import ImageRows


@dataclasses.dataclass(frozen=True)
class PoolMaps:
    """block5 maps for the head, block4 maps for block5 (from cache), and the maps the store
    holds of each image's mirror image (``--flip-views``) and augmented views (``--views K``)."""

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    block4: np.ndarray | None  # None when block5 trains on images
    flipped: np.ndarray | None  # block4 maps of the mirror images, row for row
    X_views: np.ndarray | None  # (rows, K, ...) block5 maps of the augmented views
    block4_views: np.ndarray | None  # (rows, K, ...) their block4 maps

    @classmethod
    def read(cls, store: Any, block4: bool = True) -> PoolMaps:
        """The maps the head needs, and with `block4` those the cached fine-tune draws from."""

        def maps(**dataset: Any) -> np.ndarray:
            return read_labelled(store, POOL_SPLITS, **dataset)[0]

        X, y, ids = read_labelled(store, POOL_SPLITS)
        keys = range(1, store.views + 1)
        X_views = np.stack([maps(view=k) for k in keys], axis=1) if store.views else None
        if not block4:
            return cls(X, y, ids, None, None, X_views, None)
        flipped = maps(layer="block4_pool", flipped=True) if store.fingerprint.flip_views else None
        block4_views = None
        if store.views:
            block4_views = np.stack([maps(layer="block4_pool", view=k) for k in keys], axis=1)
        return cls(X, y, ids, maps(layer="block4_pool"), flipped, X_views, block4_views)

    def drawn(self) -> dict[str, np.ndarray]:
        """The block4 maps training draws from besides each image's own: "flipped", "view k"."""
        maps = {} if self.flipped is None else {"flipped": self.flipped}
        k = 0 if self.block4_views is None else self.block4_views.shape[1]
        return maps | {f"view {i + 1}": self.block4_views[:, i] for i in range(k)}  # type: ignore[index]


def pool_images(store: Any, pool: PoolMaps, workers: int) -> ImageRows:
    """The pool's images row for row with `pool` (by image id), decoded at the store's input
    size and checked against the ids; refuses a pool with an image it cannot read, since every
    fold scores every one of its held-out images."""
    by_id = {image.image_id: image for image in store.images(list(POOL_SPLITS))}
    images = [by_id[str(image_id)] for image_id in pool.ids]
    rows = ImageRows(
        [image.path for image in images],
        np.array([image.relpath for image in images], dtype=object),
        np.asarray(pool.ids, dtype=object),
        pool.y,
        store.fingerprint.input_size,
        workers,
    )
    if rows.skipped:
        relpath, reason = next(iter(rows.skipped.items()))
        path = next(image.path for image in images if image.relpath == relpath)
        more = f" ({len(rows.skipped) - 1} more images too)" if len(rows.skipped) > 1 else ""
        raise FinetuneError(f"{path}: {reason}{more}; --from-images needs every train+validation image")
    return rows
