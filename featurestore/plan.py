"""What an extraction has to do: the source diffed against the store's live rows.

New and changed images become tasks; images whose size, mtime and label match their live row
are unchanged and never read; live rows whose file left the source are deleted.
"""

from __future__ import annotations

import dataclasses

from featurestore.sources import Source, SourceImage
from featurestore.store import FeatureStore


@dataclasses.dataclass(frozen=True)
class Task:
    image: SourceImage
    kind: str  # "new", "changed", or "retried" (failed last time)


@dataclasses.dataclass(frozen=True)
class Plan:
    tasks: list[Task]
    unchanged: list[str]  # relpaths
    deleted: list[str]  # relpaths of live rows whose file left the source

    def count(self, kind: str) -> int:
        return sum(1 for task in self.tasks if task.kind == kind)


def plan_extraction(source: Source, store: FeatureStore, *, rehash: bool) -> Plan:
    """Split the source into tasks (new, changed), unchanged relpaths, and deleted relpaths."""
    live = {row["paths"]: row for row in store.live_rows()}
    tasks, unchanged = [], []
    for image in source.images:
        row = live.get(image.relpath)
        if row is None:
            tasks.append(Task(image, "retried" if image.relpath in store.failures else "new"))
            continue
        try:
            stat = image.path.stat()
        except OSError:
            tasks.append(Task(image, "changed"))  # the worker records why it cannot be read
            continue
        same_stat = stat.st_size == row["sizes"] and stat.st_mtime_ns == row["mtime_ns"]
        same_label = (image.label or "") == row["labels"]
        if same_stat and same_label and not rehash:
            unchanged.append(image.relpath)
        else:
            tasks.append(Task(image, "changed"))
    in_source = {image.relpath for image in source.images}
    deleted = [relpath for relpath in live if relpath not in in_source]
    return Plan(tasks, unchanged, deleted)
