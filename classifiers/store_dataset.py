"""A `keras.utils.PyDataset` over a store split larger than memory, shuffled per epoch.

The store reads a split front to back (`FeatureStore.iter_batches`); a shuffled epoch needs
its rows in any order. `StoreBatches` copies the labeled rows once, in store batches, into a
flat float32 file in a temporary folder (one sequential pass), then serves each epoch from it:
the file's blocks of `block_rows` consecutive rows come in a random order, `window_blocks` of
them are read at once (contiguous reads, at disk speed even when the page cache cannot hold
the file) and their rows are shuffled together into batches. Every row comes exactly once per
epoch; the order is a function of the seed and the epoch number alone. The next window is read
by a background thread while the current one trains. Memory: two windows (2 x 4,096 rows of
(4, 4, 512) float32 maps is 256 MiB by default), whatever the split's size.

Imports Keras: import this module only where a head trains.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classifiers.keras_heads import KerasHead
from classifiers.streaming import iter_labeled, labeled_rows, present_classes

__all__ = ["StoreBatches", "fit_head"]


class StoreBatches(keras.utils.PyDataset):
    """Shuffled (maps, class codes) batches of the labeled rows of one or more store splits.

    Parameters
    ----------
    store : an open `featurestore.FeatureStore`.
    sources : (split, flipped) pairs read in this order (the train split, then its flipped
        views when training on them).
    classes : sorted label values (indices into the store's class names) the head predicts;
        batches give each row's position in it.
    batch_size, seed : rows per batch (the epoch's last batch may be smaller); the shuffle seed.
    block_rows, window_blocks : shuffle granularity, see the module docstring.
    shuffle : False serves the rows in store order (validation: the copy reads faster than the
        store's checksummed HDF5 chunks, every epoch).
    """

    def __init__(
        self,
        store: Any,
        sources: Sequence[tuple[str, bool]],
        classes: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        block_rows: int = 64,
        window_blocks: int = 64,
        shuffle: bool = True,
        tmp_dir: str | Path | None = None,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.shuffle = shuffle
        self.classes = np.asarray(classes)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.block_rows = int(block_rows)
        self.window_rows = self.block_rows * int(window_blocks)
        self.sample_shape = tuple(int(d) for d in store.map_shape())
        self.rows = sum(labeled_rows(store, split) for split, _ in sources)
        self.folder = Path(tempfile.mkdtemp(prefix="featurestore-stream-", dir=tmp_dir))
        # Removed with the object, or at exit, whichever comes first.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self._row_bytes = int(np.prod(self.sample_shape)) * 4
        self.codes = self._spill(store, sources)
        self._fd = os.open(self.folder / "rows.f32", os.O_RDONLY)
        self._close_fd = weakref.finalize(self, os.close, self._fd)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-batches")
        self._windows: dict[int, tuple[Future[tuple[np.ndarray, np.ndarray, np.ndarray]], int]] = {}
        self._buffers: list[np.ndarray] = []
        self.epoch = 0
        self._plan_epoch()

    # -- the copy -------------------------------------------------------------------------
    def _spill(self, store: Any, sources: Sequence[tuple[str, bool]]) -> np.ndarray:
        codes = np.empty(self.rows, dtype=np.int64)
        at = 0
        with open(self.folder / "rows.f32", "wb") as f:
            for split, flipped in sources:
                for maps, labels in iter_labeled(store, split, flipped=flipped):
                    f.write(np.ascontiguousarray(maps, dtype=np.float32).data)
                    codes[at : at + len(labels)] = np.searchsorted(self.classes, labels)
                    at += len(labels)
        if at != self.rows:
            raise AssertionError(f"copied {at} labeled rows, the store counts {self.rows}")
        return codes

    # -- the epoch's order ------------------------------------------------------------------
    def _plan_epoch(self) -> None:
        """Blocks in a seeded random order (the short last block stays last, so that every
        epoch has the same windows' sizes and batch count), grouped into windows."""
        self._rng = np.random.default_rng([self.seed, self.epoch])
        n_blocks = -(-self.rows // self.block_rows)
        full = self.rows // self.block_rows
        shuffled = self._rng.permutation(full) if self.shuffle else np.arange(full)
        order = np.concatenate([shuffled, np.arange(full, n_blocks)])
        per_window = self.window_rows // self.block_rows
        self._window_blocks = [order[i : i + per_window] for i in range(0, n_blocks, per_window)]
        starts = range(0, self.rows, self.window_rows)
        sizes = [min(self.window_rows, self.rows - start) for start in starts]
        batches = [-(-size // self.batch_size) for size in sizes]
        self._first_batch = np.concatenate([[0], np.cumsum(batches)]).astype(np.int64)
        # One seed per window, drawn now: the rows' order does not depend on read timing.
        self._window_seeds = self._rng.integers(0, 2**63 - 1, size=len(sizes))
        self._release(set())

    def __len__(self) -> int:
        return int(self._first_batch[-1])

    def _read_window(self, w: int, buffer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The window's rows as read (blocks in file order) into a reused buffer (no page faults
        on fresh memory every window), their codes, and their shuffle."""
        blocks = np.sort(self._window_blocks[w])  # forward reads: friendlier to the disk
        spans = [(b * self.block_rows, min((b + 1) * self.block_rows, self.rows)) for b in blocks]
        n = sum(stop - start for start, stop in spans)
        flat = self._buffers[buffer][: n * self._row_bytes]
        at = 0
        for start, stop in spans:
            size = (stop - start) * self._row_bytes
            got = os.preadv(self._fd, [memoryview(flat[at : at + size])], start * self._row_bytes)
            if got != size:
                raise OSError(f"{self.folder}: short read ({got} of {size} bytes)")
            at += size
        maps = flat.view(np.float32).reshape(n, *self.sample_shape)
        codes = np.concatenate([self.codes[start:stop] for start, stop in spans])
        order = np.random.default_rng(self._window_seeds[w]).permutation(n) if self.shuffle else np.arange(n)
        return maps, codes, order

    def _submit(self, w: int) -> None:
        """Start reading window `w` into a buffer no live window uses."""
        used = {buffer for _, buffer in self._windows.values()}
        free = next((i for i in range(len(self._buffers)) if i not in used), None)
        if free is None:
            self._buffers.append(np.empty(self.window_rows * self._row_bytes, dtype=np.uint8))
            free = len(self._buffers) - 1
        self._windows[w] = (self._reader.submit(self._read_window, w, free), free)

    def _release(self, keep: set[int]) -> None:
        """Forget the windows not in `keep`, once their reads are over (their buffers are reused)."""
        for w in [k for k in self._windows if k not in keep]:
            self._windows.pop(w)[0].exception()  # waits; an error surfaces where it is used

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if w not in self._windows:
            self._submit(w)
        window = self._windows[w][0].result()
        self._release({w, w + 1})
        if w + 1 < len(self._window_blocks) and w + 1 not in self._windows:
            self._submit(w + 1)  # read ahead while this window trains
        return window

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        w = int(np.searchsorted(self._first_batch, index, side="right")) - 1
        start = (index - int(self._first_batch[w])) * self.batch_size
        maps, codes, order = self._window(w)
        rows = np.sort(order[start : start + self.batch_size])  # sorted: forward memory reads
        if not self.shuffle:
            return maps[start : start + self.batch_size].copy(), codes[rows]
        return maps[rows], codes[rows]

    def on_epoch_end(self) -> None:
        """Plan the next epoch's order (Keras calls this after each epoch)."""
        self.epoch += 1
        self._plan_epoch()

    def close(self) -> None:
        """Stop the reader and remove the temporary copy (also done when garbage-collected)."""
        self._reader.shutdown(wait=True, cancel_futures=True)
        self._windows, self._buffers = {}, []
        self._close_fd()
        self._cleanup()

    def __enter__(self) -> StoreBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fit_head(head: KerasHead, store: Any, sources: Sequence[tuple[str, bool]], *, validate: bool) -> float:
    """Train a bare Keras head on the labeled rows of `sources` from a shuffled `StoreBatches`
    (seeded by the head's `random_state`), validating on the validation split (a copy in store
    order) when `validate`. Returns the seconds spent copying the splits."""
    seed = head.random_state if isinstance(head.random_state, int) else 0
    started = time.perf_counter()
    classes = present_classes(store, sources)
    with contextlib.ExitStack() as stack:
        batches = stack.enter_context(
            StoreBatches(store, sources, classes, batch_size=int(head.batch_size), seed=seed)
        )
        validation = None
        if validate:
            every_class = np.arange(len(store.class_names))  # codes = labels: the head checks them
            validation = stack.enter_context(
                StoreBatches(
                    store, [("validation", False)], every_class, batch_size=1024, seed=0, shuffle=False
                )
            )
        copy_seconds = time.perf_counter() - started
        head.fit_batches(batches, validation)
    return copy_seconds
