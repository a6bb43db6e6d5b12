"""What an extraction has to do: the source diffed against the store's live rows.

New and changed images become tasks; images whose size, mtime and label match their live row
are unchanged and never read; live rows whose file left the source are deleted.
"""

from __future__ import annotations

import dataclasses
import os
from itertools import compress, repeat
from operator import itemgetter

import numpy as np

from featurestore.sources import Source, SourceImage
from featurestore.store import FeatureStore
from featurestore.unreadable import is_below


@dataclasses.dataclass(frozen=True)
class Task:
    image: SourceImage
    kind: str  # "new", "changed", or "retried" (failed last time)


@dataclasses.dataclass(frozen=True)
class Plan:
    tasks: list[Task]
    unchanged: list[str]  # relpaths
    deleted: list[str]  # relpaths of live rows whose file left the source
    # relpaths of live rows below a folder that could not be read: kept (featurestore.unreadable)
    kept: list[str] = dataclasses.field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for task in self.tasks if task.kind == kind)


def plan_extraction(source: Source, store: FeatureStore, *, rehash: bool) -> Plan:
    """Split the source into tasks (new, changed), unchanged relpaths, and deleted relpaths.

    Columnar compares of the source's stats (taken while listing, `discover(stat=True)`, else
    one `os.stat` per image that has a live row) against the store's index: the cost is the
    file system's, plus a few C-level passes over the paths, never Python work per stored row.
    """
    rows = store.rows
    images = source.images
    relpaths = list(map(itemgetter(1), images))
    live_at = np.flatnonzero(store.live)
    position = dict(zip(rows.paths[live_at].tolist(), live_at.tolist(), strict=True))
    at = np.fromiter(map(position.get, relpaths, repeat(-1)), np.int64, len(relpaths))
    stored = at >= 0
    sizes, mtime_ns = _stats(source, stored)
    label_code: dict[str | None, int] = {name: i for i, name in enumerate(rows.label_names)}
    label_code[None] = label_code.get("", -2)  # an unlabeled image; -2 matches no stored code
    labels = np.fromiter(map(label_code.get, map(itemgetter(2), images), repeat(-2)), np.int64, len(images))
    matched = at[stored]
    same = np.zeros(len(images), bool)
    if not rehash:
        same[stored] = (
            (sizes[stored] == rows.sizes[matched])
            & (mtime_ns[stored] == rows.mtime_ns[matched])
            & (labels[stored] == rows.labels[matched])
        )
    failures = store.failures
    tasks = [
        Task(images[i], "changed" if stored[i] else "retried" if relpaths[i] in failures else "new")
        for i in np.flatnonzero(~same).tolist()
    ]
    in_source = np.zeros(len(rows), bool)
    in_source[matched] = True
    deleted = rows.paths[live_at[~in_source[live_at]]].tolist()
    unread = source.unreadable_folders()
    kept = [relpath for relpath in deleted if is_below(relpath, unread)] if unread else []
    if kept:
        deleted = [relpath for relpath in deleted if not is_below(relpath, unread)]
    return Plan(tasks, list(compress(relpaths, same.tolist())), deleted, kept)


def _stats(source: Source, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, mtime_ns) of the source's images, -1 where unknown: listed by discovery, or one
    `os.stat` per image with a live row (a manifest's files)."""
    if source.sizes is not None and source.mtime_ns is not None:
        return np.array(source.sizes, np.int64), np.array(source.mtime_ns, np.int64)
    sizes = np.full(len(source.images), -1, np.int64)
    mtime_ns = np.full(len(source.images), -1, np.int64)
    for i in np.flatnonzero(stored).tolist():
        try:
            stat = os.stat(source.images[i].location)
        except OSError:
            continue  # a changed image: the worker records why it cannot be read
        sizes[i], mtime_ns[i] = stat.st_size, stat.st_mtime_ns
    return sizes, mtime_ns
