"""Check a run's new rows in a store for drift: sample both sides, pool, `drift.compare`.

The rows are read once through the store's public batch API and pooled on the fly; each side
keeps a seeded sample of `cap` rows chosen by a keyed hash of the image id (the rows with the
smallest keys), so the sample does not depend on piece order and costs memory for `cap` rows
only, whatever the store's size. The read itself is a full pass over the main maps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from featurestore.drift import (
    DEFAULT_ALPHA,
    DEFAULT_CAP,
    DEFAULT_THRESHOLD,
    DriftReport,
    FailureRate,
    compare,
    pool_maps,
)


def _keys(ids: Iterable[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random key per image id: the rows with the smallest keys are a random
    sample that does not depend on the order in which rows are read."""
    salt = str(seed).encode()
    return np.array(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=salt).digest(), "big") for i in ids],
        dtype=np.uint64,
    )


class _Reservoir:
    """The `cap` rows with the smallest keys seen so far."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.keys = np.zeros(0, np.uint64)
        self.rows = np.zeros((0, 0), np.float32)
        self.labels = np.zeros(0, np.int64)

    def add(self, keys: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> None:
        if not len(keys):
            return
        keys = np.concatenate([self.keys, keys])
        rows = np.concatenate([self.rows.reshape(-1, rows.shape[1]), rows])
        labels = np.concatenate([self.labels, labels])
        order = np.argsort(keys, kind="stable")[: self.cap]
        self.keys, self.rows, self.labels = keys[order], rows[order], labels[order]


def sample_store(
    store: Any, tonight_ids: Iterable[str], *, cap: int = DEFAULT_CAP, seed: int = 0, pool: str = "avg"
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((earlier rows, labels), (tonight rows, labels)) of an open store, pooled, `cap` a side.

    A row is tonight's when its image id is in `tonight_ids` (the ids the run computed). Reads
    the main maps of every live row once, in batches (store.iter_batches).
    """
    tonight = set(tonight_ids)
    sides = {False: _Reservoir(cap), True: _Reservoir(cap)}
    channels = store.map_shape()[-1]
    for batch in store.iter_batches(batch_size=1024):
        pooled = pool_maps(batch.features, pool)
        keys = _keys(batch.ids, seed)
        is_tonight = np.array([i in tonight for i in batch.ids], dtype=bool)
        for side, reservoir in sides.items():
            mask = is_tonight == side
            reservoir.add(keys[mask], pooled[mask], np.asarray(batch.labels)[mask])
    earlier, later = sides[False], sides[True]
    return (
        (earlier.rows.reshape(-1, channels), earlier.labels),
        (later.rows.reshape(-1, channels), later.labels),
    )


def check_drift(
    store: Any,
    tonight_ids: Iterable[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    alpha: float = DEFAULT_ALPHA,
    cap: int = DEFAULT_CAP,
    seed: int = 0,
    pool: str = "avg",
    failures: FailureRate | None = None,
) -> DriftReport:
    """`compare` tonight's rows (`tonight_ids`) of an open store with its other live rows."""
    (e, el), (t, tl) = sample_store(store, tonight_ids, cap=cap, seed=seed, pool=pool)
    return compare(
        e,
        el,
        t,
        tl,
        store.class_names,
        threshold=threshold,
        alpha=alpha,
        cap=cap,
        seed=seed,
        pool=pool,
        failures=failures,
    )
