"""The extraction pipeline: decode the tasks in workers, run the model in batches, commit pieces.

Decoding runs in worker threads a bounded window ahead while the model runs on the previous
batch; rows are committed in pieces every `commit_every` images or `commit_seconds`, so a kill
loses at most one piece of work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from featurestore.extractor import Extractor
from featurestore.images import ImageError, load_image
from featurestore.plan import Task
from featurestore.progress import Progress
from featurestore.signals import StopOnSignal
from featurestore.splits import SplitFractions, split_of
from featurestore.stages import StageTimes
from featurestore.store import FeatureStore
from featurestore.writer import Row, StoreWriter


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """How the pipeline runs (from `ExtractConfig`)."""

    input_size: int
    batch_size: int
    workers: int
    split_fractions: SplitFractions
    commit_every: int
    commit_seconds: float
    progress: bool


@dataclasses.dataclass
class _Decoded:
    task: Task
    image_id: str = ""
    size: int = 0
    mtime_ns: int = 0
    pixels: np.ndarray | None = None
    error: str | None = None


def _decode(task: Task, input_size: int, known_ids: set[str], current_id: str | None) -> _Decoded:
    """Worker: stat, hash, and decode unless the content is already in the store."""
    path = task.image.path
    try:
        stat = path.stat()
        with open(path, "rb") as f:
            image_id = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        return _Decoded(task, error=f"cannot read file ({exc.strerror or exc})")
    result = _Decoded(task, image_id=image_id, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if image_id in known_ids or image_id == current_id:
        return result  # features are reused from the store
    try:
        result.pixels = load_image(path, input_size)
    except ImageError as exc:
        result.error = str(exc)
    return result


class Pipeline:
    """State of one extraction: pending rows, failures, counters."""

    def __init__(
        self,
        settings: PipelineSettings,
        extractor: Extractor,
        writer: StoreWriter,
        current: FeatureStore,
        *,
        times: StageTimes | None = None,
        progress: Progress | None = None,
    ):
        self.settings = settings
        self.times = times or StageTimes()  # decode, model and write seconds, for the run record
        self.progress = progress
        self.extractor = extractor
        self.writer = writer
        self.current = current
        self.live_ids = {row["paths"]: row["ids"] for row in current.live_rows()}
        self.known_ids = {row["ids"] for row in current.live_rows()}
        self.pending: list[Row] = []
        self.failures: dict[str, dict[str, Any]] = {}
        self.resolved: list[str] = []
        self.computed = 0
        self.touched = 0
        self.model_seconds = 0.0
        self.last_commit = time.monotonic()

    def process(self, tasks: list[Task], stop: StopOnSignal) -> None:
        bar = self.progress or Progress(len(tasks), label="extract", enabled=self.settings.progress)
        batch: list[_Decoded] = []
        for done, decoded in enumerate(self._decoded(tasks, stop), 1):
            if decoded.error is not None:
                self._fail(decoded)
            elif decoded.pixels is None:
                self._reuse(decoded)
            else:
                batch.append(decoded)
            if len(batch) >= self.settings.batch_size:
                self._embed(batch)
                batch = []
            bar.update(done, len(self.failures))
            self.flush()
        if batch:
            self._embed(batch)
        bar.close()

    def _decoded(self, tasks: list[Task], stop: StopOnSignal) -> Iterator[_Decoded]:
        """Decode in worker threads, a bounded window ahead, yielding results in order."""
        window = max(2 * self.settings.batch_size, 4 * self.settings.workers)
        with ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="decode") as pool:
            queue: deque[Future[_Decoded]] = deque()
            it = iter(tasks)
            for task in it:
                queue.append(self._submit(pool, task))
                if len(queue) >= window:
                    break
            while queue and not stop.signum:
                yield queue.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    queue.append(self._submit(pool, nxt))
            for future in queue:
                future.cancel()

    def _submit(self, pool: ThreadPoolExecutor, task: Task) -> Future[_Decoded]:
        current_id = self.live_ids.get(task.image.relpath)
        return pool.submit(
            self.times.call, "decode", _decode, task, self.settings.input_size, self.known_ids, current_id
        )

    def _row(self, decoded: _Decoded, maps: dict[str, np.ndarray]) -> Row:
        image = decoded.task.image
        return Row(
            relpath=image.relpath,
            image_id=decoded.image_id,
            label=image.label,
            split=split_of(decoded.image_id, self.settings.split_fractions),
            size=decoded.size,
            mtime_ns=decoded.mtime_ns,
            maps=maps,
        )

    def _embed(self, batch: list[_Decoded]) -> None:
        if not self.computed:  # record the library versions that computed these rows
            self.writer.manifest = dataclasses.replace(
                self.writer.manifest, fingerprint=self.extractor.with_library_versions()
            )
        started = time.perf_counter()
        maps = self.extractor.embed(np.stack([d.pixels for d in batch]))
        seconds = time.perf_counter() - started
        self.model_seconds += seconds
        self.times.add("model", seconds, len(batch))
        self.computed += len(batch)
        for i, decoded in enumerate(batch):
            self.pending.append(self._row(decoded, {name: m[i] for name, m in maps.items()}))

    def _reuse(self, decoded: _Decoded) -> None:
        maps = self.current.maps_of_id(decoded.image_id)
        if maps is None:  # first seen in this run: still pending, or committed since the start
            pending = (r.maps for r in self.pending if r.image_id == decoded.image_id)
            maps = next(pending, None) or FeatureStore(self.writer.path, self.writer.manifest).maps_of_id(
                decoded.image_id
            )
        if self.live_ids.get(decoded.task.image.relpath) == decoded.image_id:
            self.touched += 1  # same bytes, new mtime: rewrite the row so the stat fast path holds
        self.pending.append(self._row(decoded, maps))

    def _fail(self, decoded: _Decoded) -> None:
        image = decoded.task.image
        self.failures[image.relpath] = {
            "reason": decoded.error,
            "size": decoded.size,
            "mtime_ns": decoded.mtime_ns,
        }
        print(f"skipped {image.path}: {decoded.error}", file=sys.stderr)

    def flush(
        self,
        *,
        deleted: list[str] | None = None,
        failures: dict[str, dict[str, Any]] | None = None,
        force: bool = False,
    ) -> None:
        due = len(self.pending) >= self.settings.commit_every or (
            self.pending and time.monotonic() - self.last_commit >= self.settings.commit_seconds
        )
        if not (due or force):
            return
        recorded = self.writer.manifest.failures  # type: ignore[union-attr]
        all_failures = {**self.failures, **(failures or {})}
        # The final commit forgets failures of images that are gone or now fine.
        stale = [k for k in recorded if k not in all_failures] if force else []
        if not (self.pending or deleted or stale or all_failures.keys() - recorded.keys()):
            return  # nothing changed: leave the manifest as it is
        with self.times.timed("write", len(self.pending)):
            self.writer.commit_rows(
                self.pending, deleted=deleted or (), failures=all_failures, resolved=stale
            )
        for row in self.pending:
            self.known_ids.add(row.image_id)
        self.pending = []
        self.last_commit = time.monotonic()
