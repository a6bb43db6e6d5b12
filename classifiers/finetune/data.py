"""Training inputs per split: the store's images, or its cached block4_pool maps.

Images are read from the store's source root and relative paths, checked against the image id
(sha256 of the file) the store recorded, and kept in memory as uint8 when they fit (a 150 px
image is 66 KB) so that later epochs decode nothing. Augmentation of images happens in the
model (Keras preprocessing layers). The cached path cannot transform a map (VGG filters are not
mirror-symmetric, nor are crops of a map the maps of a crop): it augments by picking, each epoch,
one of the maps the store holds for each image: the image's own, its flipped image's
(`extract --flip-views`) or one of its K augmented views' (`extract --views K`).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classifiers.errors import FinetuneError
from featurestore.images import ImageError, load_image

#: Keep decoded images in memory up to this many bytes; above it, decode every batch.
MAX_CACHE_BYTES = 4 << 30
#: Keep the cached views' maps in memory up to this many bytes; above it, read them every epoch.
MAX_VIEW_BYTES = 4 << 30
#: Rows a streamed view is read in (store.iter_batches); a block is the only extra memory.
VIEW_BLOCK_ROWS = 1024


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

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def for_epoch(
        self, epoch: int, seed: int, batch_size: int, augment: bool = False, workers: int = 1
    ) -> Batches:
        """Shuffled batches of one epoch; the order depends only on seed and epoch, so a resumed
        run sees the same epochs as an uninterrupted one. (`augment`: see `MapRows`.)"""
        order = np.random.default_rng([seed, epoch]).permutation(len(self))
        return Batches(self.fetch, self.labels, order, batch_size, workers)

    def in_order(self, batch_size: int, workers: int = 1) -> Batches:
        return Batches(self.fetch, self.labels, np.arange(len(self)), batch_size, workers)


class RowsAt(Rows):
    """Rows `at` of other rows, with labels of their own: a fold's images out of all the pool's,
    fetched through them, never copied (see `MapRows`' `at` for why that matters)."""

    def __init__(self, rows: Rows, at: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(rows.relpaths[at], labels)
        self.rows, self.at = rows, np.asarray(at)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        return self.rows.fetch(self.at[rows])


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

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        if self.images is not None:
            return self.images[rows].astype(np.float32)
        try:
            return np.stack([load_image(self.paths[i], self.size) for i in rows])
        except ImageError as exc:
            raise FinetuneError(f"an image changed during training: {exc}") from None


class CachedView:
    """One more stored map per row of a split, row for row with the originals: the flipped
    image's ("flipped") or augmented view k's ("view k"). `blocks()` yields them in row order,
    a block of rows at a time: one block holding them all when they were loaded once (`maps`),
    else read from the store again on each call (`maps` None)."""

    def __init__(
        self, name: str, blocks: Callable[[], Iterable[np.ndarray]], maps: np.ndarray | None = None
    ) -> None:
        self.name, self.blocks, self.maps = name, blocks, maps

    @classmethod
    def loaded(cls, name: str, maps: np.ndarray) -> CachedView:
        return cls(name, lambda: (maps,), maps)


class MapRows(Rows):
    """Cached block4_pool maps of the store's rows, and the other maps stored for each row
    (`views`: the flipped image's, the augmented views') that augmentation draws from.

    `at`, when given, picks the rows out of larger arrays: row i is row ``at[i]`` of `maps` and
    of every view's maps (all loaded), read batch by batch, never copied. (`finetune-cv` trains
    on a subset of the images in each fold; TensorFlow's generator datasets keep an epoch's
    batches, and what they read from, alive after training.)"""

    def __init__(
        self,
        maps: np.ndarray,
        relpaths: np.ndarray,
        labels: np.ndarray,
        views: Sequence[CachedView] = (),
        at: np.ndarray | None = None,
    ) -> None:
        super().__init__(relpaths, labels)
        self.maps, self.views = maps, list(views)
        if at is not None and any(view.maps is None for view in self.views):
            raise ValueError("rows picked out of larger arrays need every view loaded")
        self.at = np.arange(len(labels)) if at is None else np.asarray(at)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        return self.maps[self.at[rows]]

    def picks(self, epoch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(order, pick) of one epoch: the shuffled rows, and for each row which of its maps it
        is fed (0: the original, i: `views[i - 1]`), uniformly; from (seed, epoch) alone."""
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(self))
        if len(self.views) == 1 and self.views[0].name == "flipped":
            # the draw of the flips-only cache from before augmented views existed: checkpoints
            # it wrote resume with the same epochs
            return order, (rng.random(len(self)) < 0.5).astype(np.int64)
        return order, rng.integers(0, len(self.views) + 1, len(self))

    def epoch_maps(self, pick: np.ndarray) -> np.ndarray:
        """Each row's picked map, row for row: one more copy of the split's maps, whatever the
        number of views (each view is read through once, a block at a time); `for_epoch` uses it
        when a view is streamed."""
        out = self.maps.copy()
        for i, view in enumerate(self.views, start=1):
            if not (pick == i).any():
                continue
            at = 0
            for block in view.blocks():
                chosen = np.flatnonzero(pick[at : at + len(block)] == i)
                out[at + chosen] = block[chosen]
                at += len(block)
            if at != len(out):
                raise FinetuneError(f"the store's {view.name} maps have {at} rows, not {len(out)}")
        return out

    def for_epoch(
        self, epoch: int, seed: int, batch_size: int, augment: bool = False, workers: int = 1
    ) -> Batches:
        """With `augment` and stored views, each row is fed the map `picks` draws for it."""
        if not augment or not self.views:
            return super().for_epoch(epoch, seed, batch_size, augment, workers)
        order, pick = self.picks(epoch, seed)
        loaded = [view.maps for view in self.views]
        if all(maps is not None for maps in loaded):  # each batch gathered from its sources
            sources = [self.maps, *loaded]

            def fetch(rows: np.ndarray) -> np.ndarray:
                return _gather(sources, pick[rows], self.at[rows])

            return Batches(fetch, self.labels, order, batch_size, workers)
        maps = self.epoch_maps(pick)
        return Batches(lambda rows: maps[rows], self.labels, order, batch_size, workers)


def _gather(sources: Sequence[np.ndarray], chosen: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Row `positions[j]` of `sources[chosen[j]]` for each j: a batch of the epoch's maps without
    a copy of the whole split (`MapRows.epoch_maps`) when every view is in memory."""
    out = np.empty((len(positions), *sources[0].shape[1:]), sources[0].dtype)
    for i, source in enumerate(sources):
        at = np.flatnonzero(chosen == i)
        if len(at):
            out[at] = source[positions[at]]
    return out


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


def map_rows(
    store: Any, split: str, classes: np.ndarray, augment: bool, max_view_bytes: int = MAX_VIEW_BYTES
) -> MapRows:
    """The labeled rows of `split` as cached block4_pool maps; with `augment`, the flipped
    images' and augmented views' maps the store holds too: loaded once when they fit in
    `max_view_bytes`, else read from the store each epoch (one block of rows at a time)."""
    data = store.load(split, layer="block4_pool")
    keep, codes = label_codes(data.labels, classes)  # unlabeled rows (-1) are in no class
    rows = MapRows(data.features[keep], data.paths[keep], codes)
    if augment:
        sources = [("flipped", {"flipped": True})] if store.fingerprint.flip_views else []
        sources += [(f"view {k}", {"view": k}) for k in range(1, store.fingerprint.views + 1)]
        load_once = len(sources) * rows.maps.nbytes <= max_view_bytes
        for name, where in sources:
            if load_once:
                maps = store.load(split, layer="block4_pool", **where).features[keep]
                rows.views.append(CachedView.loaded(name, maps))
            else:
                rows.views.append(CachedView(name, _streamed(store, split, keep, where)))
    return rows


def _streamed(
    store: Any, split: str, keep: np.ndarray, where: dict[str, Any]
) -> Callable[[], Iterator[np.ndarray]]:
    """The kept rows of one stored view of `split`, read a block at a time on each call."""

    def blocks() -> Iterator[np.ndarray]:
        at = 0
        for batch in store.iter_batches(split, batch_size=VIEW_BLOCK_ROWS, layer="block4_pool", **where):
            yield batch.features[keep[at : at + len(batch)]]
            at += len(batch)

    return blocks


def cached_views(store: Any) -> dict[str, Any]:
    """Which stored maps `--from-cache --augment` draws from, as the model records them (the
    names `train` records: flipped_views, augmented_views)."""
    return {"flipped_views": bool(store.fingerprint.flip_views), "augmented_views": store.fingerprint.views}


def check_cache(store: Any, augment: bool) -> None:
    """Refuse a store that cannot feed the cached-block4 path, saying how to make one."""
    fp = store.fingerprint
    fix = f"featurestore extract SOURCE --store {store.path} --extra-layer block4_pool --flip-views --rebuild"
    if "block4_pool" not in fp.extra_layers:
        raise FinetuneError(f"--from-cache: {store.path} holds no block4_pool maps; run `{fix}`")
    if augment and not fp.flip_views and not fp.views:
        raise FinetuneError(
            f"--from-cache with --augment needs stored views to draw from: {store.path} was "
            f"extracted with neither --flip-views nor --views K; use --no-augment or run `{fix}` "
            "(--flip-views, --views K or both)"
        )
