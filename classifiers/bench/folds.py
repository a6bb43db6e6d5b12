"""The benchmark's data and folds: read once, ordered by image id, split the same for everyone.

The store's rows come back in commit order, which depends on how the store grew. Sorting the
train+validation rows by image id (the sha256 of the content) makes the fold assignment a
function of the content, the fold count and the seed alone: the same store and seed give the
same folds in every run, for every classifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.errors import BenchError

#: The store splits the folds are drawn from; the test split is held back for the final fit.
POOL_SPLITS = ("train", "validation")
TEST_SPLIT = "test"


@dataclass(frozen=True)
class BenchData:
    """Labelled train+validation rows (sorted by id) and the test rows, as arrays."""

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    ids_test: np.ndarray
    class_names: tuple[str, ...]
    store: dict[str, Any]  # path, fingerprint, fingerprint digest, content digest, counts
    duplicates_dropped: int
    X_flipped: np.ndarray | None = None  # the mirror images' maps, row for row (--flip-views)
    X_test_flipped: np.ndarray | None = None
    # the pool images' augmented views (extract --views K): (rows, K, ...), row for row
    X_views: np.ndarray | None = None
    X_test_views: np.ndarray | None = None

    def restricted(self, ids: np.ndarray, ids_test: np.ndarray) -> BenchData:
        """The rows of the given ids only (both sorted, as this data is), in the same order."""
        keep, keep_test = np.isin(self.ids, ids), np.isin(self.ids_test, ids_test)

        def cut(array: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
            return None if array is None else array[mask]

        return BenchData(
            self.X[keep],
            self.y[keep],
            self.ids[keep],
            self.X_test[keep_test],
            self.y_test[keep_test],
            self.ids_test[keep_test],
            self.class_names,
            self.store | {"pool_rows": int(keep.sum()), "test_rows": int(keep_test.sum())},
            self.duplicates_dropped,
            cut(self.X_flipped, keep),
            cut(self.X_test_flipped, keep_test),
            cut(self.X_views, keep),
            cut(self.X_test_views, keep_test),
        )


@dataclass(frozen=True)
class Fold:
    """One resampling of the pool: `index` over all repeats, positions into `BenchData.X`."""

    index: int
    repeat: int
    train: np.ndarray
    test: np.ndarray
    digest: str  # sha256 of the fold's test ids: names the fold independently of how it was drawn


def _unique_order(labels: np.ndarray, ids: np.ndarray, paths: np.ndarray) -> tuple[np.ndarray, int]:
    """Positions of the labelled rows, one per image id, sorted by id (ties broken by path),
    and how many duplicates that dropped.

    Two files with the same content share an id and identical maps; keeping both could put
    one in a training fold and its copy in the test fold, which would flatter every model.
    """
    keep = np.flatnonzero(labels >= 0)
    order = keep[np.lexsort((paths[keep].astype(str), ids[keep].astype(str)))]
    sorted_ids = ids[order].astype(str)
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    return order[first], int((~first).sum())


def _labelled_unique(
    features: np.ndarray, labels: np.ndarray, ids: np.ndarray, paths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Keep labelled rows, one per image id, sorted by id (see `_unique_order`)."""
    order, dropped = _unique_order(labels, ids, paths)
    # A fancy-indexed copy in memory (the store itself was read as whole splits).
    return features[order], labels[order], ids[order].astype(str), dropped


def load_data(
    store_path: str | Path,
    folds: int,
    *,
    stream: bool | None = False,
    reads: Sequence[str] = (),
    say: Callable[[str], None] | None = None,
    flipped: bool = False,
    views: bool = False,
) -> BenchData:
    """Open the store, read train+validation and test with whole-split reads, check the classes.

    `stream` None streams when the maps would not fit in the available memory
    (`classifiers.streaming.decide`; True forces it, and `say` gets the one line saying so):
    the rows are then pooled while they are read, which needs every variant to read the same
    pooled features (`reads`, the variants' `reads`: all ``max`` or all ``avg``). The pooled
    rows give the pipelines' `FeatureTransform` 1x1 maps, which it passes through unchanged,
    so every cell scores as it would on the maps (and its cached file is the same).

    `flipped` also reads the maps of the mirror images (a store extracted with --flip-views),
    row for row; it is not streamed. `views` reads the augmented views of the train+validation
    images and of the test images (a store extracted with --views K) as (rows, K, ...) arrays,
    row for row; it is not streamed either.

    Raises `featurestore.StoreError` for a missing or broken store and `BenchError` when there
    are fewer than 2 classes, a class has fewer labelled rows than `folds`, or a streamed
    benchmark has variants that do not read one pooling.
    """
    import featurestore
    from classifiers import streaming

    store = featurestore.open_store(store_path)
    class_names = tuple(store.class_names)
    if len(class_names) < 2:
        raise BenchError(f"{store_path}: the store has {len(class_names)} class(es); a benchmark needs 2")
    needed = streaming.maps_bytes(store, [(split, False) for split in (*POOL_SPLITS, TEST_SPLIT)])
    decision = streaming.decide(needed, "the train, validation and test maps", stream)
    pooling = None
    if decision.stream:
        modes = sorted(set(reads))
        if len(modes) != 1 or modes[0] not in ("max", "avg"):
            raise BenchError(
                f"{store_path}: the maps take {streaming.format_bytes(needed)} as float32 "
                f"({streaming.format_bytes(decision.available)} available): streamed, bench pools "
                f"while reading, so every classifier must read one pooling (--features max or avg), "
                f"not {', '.join(modes)}"
            )
        pooling = modes[0]
        if say is not None:
            say(f"{decision.message}; pooled ({pooling}) while reading")
    pool = _read(store, list(POOL_SPLITS), pooling)
    X, y, ids, dropped = _labelled_unique(*pool)
    counts = np.bincount(y, minlength=len(class_names))
    if (counts < folds).any():
        low = int(np.argmin(counts))
        raise BenchError(
            f"{store_path}: class {class_names[low]!r} has {counts[low]} labelled train+validation "
            f"row(s); --folds {folds} needs at least {folds} per class"
        )
    X_test, y_test, ids_test, dropped_test = _labelled_unique(*_read(store, [TEST_SPLIT], pooling))

    def same_rows(**dataset: Any) -> tuple[np.ndarray, np.ndarray]:
        """The pool's and the test split's maps of another dataset (flipped, a view), in the
        rows and order of X and X_test."""
        pool_maps = read_labelled(store, POOL_SPLITS, **dataset)[0]
        return pool_maps, read_labelled(store, [TEST_SPLIT], **dataset)[0]

    X_flipped = X_test_flipped = None
    if flipped:  # the same rows in the same order, from the flipped datasets
        if pooling is not None:
            raise BenchError(f"{store_path}: --flips and --tta read whole maps; they are not streamed")
        X_flipped, X_test_flipped = same_rows(flipped=True)
    X_views = X_test_views = None
    if views:  # K whole-split reads of the same rows, stacked on a new axis 1
        if pooling is not None:
            raise BenchError(f"{store_path}: --views and --tta views read whole maps; they are not streamed")
        per_view = [same_rows(view=k) for k in range(1, store.views + 1)]
        X_views = np.stack([pool_maps for pool_maps, _ in per_view], axis=1)
        X_test_views = np.stack([test_maps for _, test_maps in per_view], axis=1)
    info = {
        "path": str(Path(store_path).resolve()),
        "fingerprint": store.fingerprint.to_dict(),
        "fingerprint_digest": store.fingerprint.digest,
        "digest": store.digest,
        "class_names": list(class_names),
        "counts": store.counts(),
        "pool_rows": len(y),
        "test_rows": len(y_test),
        "streamed": pooling,
    }
    data = BenchData(X, y, ids, X_test, y_test, ids_test, class_names, info, dropped + dropped_test)
    return dataclasses.replace(
        data, X_flipped=X_flipped, X_test_flipped=X_test_flipped, X_views=X_views, X_test_views=X_test_views
    )


def read_labelled(
    store: Any, splits: Sequence[str], **dataset: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(maps, labels, ids) of the labelled images of `splits` in `load_data`'s rows (one per
    image id, sorted by id: a sort of the ids, small beside reading the maps), from one of the
    store's datasets: `store.load`'s `layer`, `flipped` or `view`. Rows of the same opened store
    line up across datasets."""
    rows = store.load(list(splits), **dataset)
    X, y, ids, _ = _labelled_unique(rows.features, rows.labels, rows.ids, rows.paths)
    return X, y, ids


def common_images(datas: list[BenchData], names: list[str]) -> tuple[list[BenchData], int]:
    """Each store's data cut to the images every store holds, and how many images that left out.

    Stores of the same images give the same ids in the same sorted order, hence the same
    folds; a store still being extracted is compared on the images it already has. Refuses
    stores whose classes or labels for the same image differ.
    """
    first = datas[0]
    ids, ids_test = first.ids, first.ids_test
    for data, name in zip(datas[1:], names[1:], strict=True):
        if data.class_names != first.class_names:
            raise BenchError(
                f"{name}: classes {list(data.class_names)} differ from {list(first.class_names)}"
            )
        ids, ids_test = np.intersect1d(ids, data.ids), np.intersect1d(ids_test, data.ids_test)
    cut = [data.restricted(ids, ids_test) for data in datas]
    for data, name in zip(cut[1:], names[1:], strict=True):
        if not (np.array_equal(data.y, cut[0].y) and np.array_equal(data.y_test, cut[0].y_test)):
            raise BenchError(f"{name}: the same images have other labels than in {names[0]}")
    if not len(ids):
        raise BenchError(f"the stores {', '.join(names)} share no labelled train+validation images")
    left_out = max(len(d.ids) + len(d.ids_test) for d in datas) - len(ids) - len(ids_test)
    return cut, left_out


def _read(
    store: Any, splits: list[str], pooling: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, ids, paths) of `splits`: whole-split reads, or (`pooling`) batches
    pooled as they are read, in the same order."""
    if pooling is None:
        data = store.load(splits)
        return data.features, data.labels, data.ids, data.paths
    from classifiers.streaming import READ_ROWS
    from classifiers.transforms import FeatureTransform

    pool = FeatureTransform(mode=pooling).fit(np.zeros((1, *store.map_shape()), dtype=np.float32))
    parts: list[tuple[np.ndarray, ...]] = [
        (pool.transform(b.features), b.labels, b.ids, b.paths)
        for b in store.iter_batches(splits, batch_size=READ_ROWS)
    ]
    if not parts:
        return np.empty((0, pool.n_features_out_), np.float32), *(
            np.empty(0, t) for t in (np.int64, object, object)
        )
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]


def ids_digest(ids: np.ndarray) -> str:
    """sha256 of a set of image ids (order-free)."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()


def make_folds(y: np.ndarray, ids: np.ndarray, folds: int, repeats: int, seed: int) -> list[Fold]:
    """Stratified, shuffled, seeded folds (repeated `repeats` times) over rows sorted by id."""
    from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

    if repeats == 1:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    placeholder = np.zeros((len(y), 1))  # the splitter only looks at y and the row count
    return [
        Fold(i, i // folds, train, test, ids_digest(ids[test]))
        for i, (train, test) in enumerate(splitter.split(placeholder, y))
    ]
