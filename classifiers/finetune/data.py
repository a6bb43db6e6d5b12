"""Training inputs per split: the store's images, or its cached block4_pool maps.

Images are read from the store's source root and relative paths, checked against the image id
(sha256 of the file) the store recorded, and kept in memory as uint8 when they fit (a 150 px
image is 66 KB) so that later epochs decode nothing. Augmentation of images happens in the
model (Keras preprocessing layers); the cached path can only flip, and does it by picking the
stored map of the flipped image, never by flipping a map (VGG filters are not mirror-symmetric).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classifiers.errors import FinetuneError
from featurestore.images import ImageError, load_image

#: Keep decoded images in memory up to this many bytes; above it, decode every batch.
MAX_CACHE_BYTES = 4 << 30


class Batches(keras.utils.PyDataset):
    """(inputs, labels) batches of the rows `order`; `fetch(indices)` makes the inputs."""

    def __init__(
        self,
        fetch: Callable[[np.ndarray], np.ndarray],
        labels: np.ndarray,
        order: np.ndarray,
        batch_size: int,
        workers: int = 1,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=False)
        self.fetch, self.labels, self.order, self.batch_size = fetch, labels, order, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.fetch(rows), self.labels[rows]

    def inputs(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index][0]


class Rows:
    """One split's rows: label codes, relative paths, and how to fetch model inputs."""

    def __init__(self, relpaths: np.ndarray, labels: np.ndarray) -> None:
        self.relpaths = relpaths
        self.labels = labels
        self.skipped: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def fetch(self, rows: np.ndarray, flips: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def for_epoch(self, epoch: int, seed: int, batch_size: int, flip: bool, workers: int = 1) -> Batches:
        """Shuffled batches of one epoch; the order (and the flips) depend only on seed and epoch,
        so a resumed run sees the same epochs as an uninterrupted one."""
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self))
        flips = rng.random(len(self)) < 0.5 if flip else None
        return Batches(lambda rows: self.fetch(rows, flips), self.labels, order, batch_size, workers)

    def in_order(self, batch_size: int, workers: int = 1) -> Batches:
        return Batches(self.fetch, self.labels, np.arange(len(self)), batch_size, workers)


class ImageRows(Rows):
    """Images of the store's rows, decoded at the store's input size."""

    def __init__(
        self,
        paths: list[Path],
        relpaths: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray,
        size: int,
        workers: int,
        max_cache_bytes: int = MAX_CACHE_BYTES,
    ) -> None:
        keep = size * size * 3 * len(paths) <= max_cache_bytes
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(lambda i: self._read(paths[i], ids[i], size, keep), range(len(paths))))
        good = np.array([not isinstance(r, str) for r in results], dtype=bool)
        super().__init__(relpaths[good], labels[good])
        self.skipped = {str(relpaths[i]): r for i, r in enumerate(results) if isinstance(r, str)}
        self.paths = [p for p, ok in zip(paths, good, strict=True) if ok]
        self.ids, self.size = ids[good], size
        self.images = (
            np.stack([r for r in results if not isinstance(r, str)]) if keep and good.any() else None
        )

    @staticmethod
    def _read(path: Path, image_id: str, size: int, keep: bool) -> np.ndarray | str | None:
        """The uint8 image (None when not kept), or why the row cannot be used."""
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() != image_id:
                return "changed since extraction (sha256 differs); run featurestore extract again"
            pixels = load_image(path, size)
        except FileNotFoundError:
            return "cannot read file: not found"
        except OSError as exc:
            return f"cannot read file: {exc.strerror or exc}"
        except ImageError as exc:
            return str(exc)
        # PIL's resize yields 8-bit pixels, so uint8 holds them exactly at a quarter of the memory.
        return pixels.astype(np.uint8) if keep else None

    def fetch(self, rows: np.ndarray, flips: np.ndarray | None = None) -> np.ndarray:
        if self.images is not None:
            return self.images[rows].astype(np.float32)
        try:
            return np.stack([load_image(self.paths[i], self.size) for i in rows])
        except ImageError as exc:
            raise FinetuneError(f"an image changed during training: {exc}") from None


class MapRows(Rows):
    """Cached block4_pool maps of the store's rows, with the flipped images' maps if stored."""

    def __init__(
        self, maps: np.ndarray, flipped: np.ndarray | None, relpaths: np.ndarray, labels: np.ndarray
    ) -> None:
        super().__init__(relpaths, labels)
        self.maps, self.flipped = maps, flipped

    def fetch(self, rows: np.ndarray, flips: np.ndarray | None = None) -> np.ndarray:
        if flips is None or self.flipped is None:
            return self.maps[rows]
        return np.where(flips[rows][:, None, None, None], self.flipped[rows], self.maps[rows])


def label_codes(labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, codes): labels (store class indices) as positions in the head's `classes`."""
    position = {int(c): i for i, c in enumerate(classes)}
    keep = np.array([int(label) in position for label in labels], dtype=bool)
    codes = np.array([position[int(label)] for label in labels[keep]], dtype=np.int64)
    return keep, codes


def image_rows(
    store: Any,
    split: str,
    classes: np.ndarray,
    workers: int,
    max_cache_bytes: int = MAX_CACHE_BYTES,
) -> ImageRows:
    """The labeled rows of `split` as images read from the store's source root."""
    index = {name: i for i, name in enumerate(store.class_names)}
    images = [image for image in store.images(split) if image.label in index]
    labels = np.array([index[image.label] for image in images], dtype=np.int64)
    keep, codes = label_codes(labels, classes)
    images = [image for image, ok in zip(images, keep, strict=True) if ok]
    result = ImageRows(
        [image.path for image in images],
        np.array([image.relpath for image in images], dtype=object),
        np.array([image.image_id for image in images], dtype=object),
        codes,
        store.fingerprint.input_size,
        workers,
        max_cache_bytes,
    )
    for relpath, reason in result.skipped.items():
        print(f"finetune: skipping {relpath}: {reason}", file=sys.stderr)
    return result


def map_rows(store: Any, split: str, classes: np.ndarray, flipped: bool) -> MapRows:
    """The labeled rows of `split` as cached block4_pool maps (and flipped views)."""
    data = store.load(split, layer="block4_pool")
    keep, codes = label_codes(data.labels, classes)  # unlabeled rows (-1) are in no class
    views = store.load(split, layer="block4_pool", flipped=True).features[keep] if flipped else None
    return MapRows(data.features[keep], views, data.paths[keep], codes)


def check_cache(store: Any, augment: bool) -> None:
    """Refuse a store that cannot feed the cached-block4 path, saying how to make one."""
    fp = store.fingerprint
    fix = f"featurestore extract SOURCE --store {store.path} --extra-layer block4_pool --flip-views --rebuild"
    if "block4_pool" not in fp.extra_layers:
        raise FinetuneError(f"--from-cache: {store.path} holds no block4_pool maps; run `{fix}`")
    if augment and not fp.flip_views:
        raise FinetuneError(
            f"--from-cache with --augment needs the flipped views: {store.path} was extracted "
            f"without --flip-views; use --no-augment or run `{fix}`"
        )
