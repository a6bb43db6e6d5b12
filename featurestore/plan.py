"""What an extraction has to do: the source diffed against the store's live rows.

New and changed images become tasks; images whose size, mtime and label match their live row
are unchanged and never read; live rows whose file left the source are deleted.
"""

from __future__ import annotations

import dataclasses
import os

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

    One `os.stat` per image that has a live row and columnar compares against the store's
    index: the cost is the file system's, not one Python object per stored row.
    """
    rows = store.rows
    live_at = np.flatnonzero(store.live)
    live_paths = rows.paths[live_at].tolist()
    position = dict(zip(live_paths, live_at.tolist(), strict=True))
    label_code = {name: i for i, name in enumerate(rows.label_names)}
    images = source.images
    tasks, unchanged = [], []
    failures = store.failures
    stored_sizes, stored_mtimes, stored_labels = (
        rows.sizes.tolist(),
        rows.mtime_ns.tolist(),
        rows.labels.tolist(),
    )
    for image in images:
        at = position.get(image.relpath)
        if at is None:
            tasks.append(Task(image, "retried" if image.relpath in failures else "new"))
            continue
        try:
            stat = os.stat(image.location)
        except OSError:
            tasks.append(Task(image, "changed"))  # the worker records why it cannot be read
            continue
        if (
            not rehash
            and stat.st_size == stored_sizes[at]
            and stat.st_mtime_ns == stored_mtimes[at]
            and label_code.get(image.label or "", -1) == stored_labels[at]
        ):
            unchanged.append(image.relpath)
        else:
            tasks.append(Task(image, "changed"))
    in_source = {image.relpath for image in images}
    deleted = [relpath for relpath in live_paths if relpath not in in_source]
    unread = source.unreadable_folders()
    kept = [relpath for relpath in deleted if is_below(relpath, unread)] if unread else []
    if kept:
        deleted = [relpath for relpath in deleted if not is_below(relpath, unread)]
    return Plan(tasks, unchanged, deleted, kept)
