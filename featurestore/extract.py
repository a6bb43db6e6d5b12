"""The extraction job: bring a store up to date with an image tree.

Only new or changed images go through the model. Decoding runs in worker threads while the
model runs on the previous batch; rows are committed in pieces every `commit_every` images or
`commit_seconds`, so a kill loses at most one piece of work. SIGTERM and Ctrl-C commit what is
done, then stop with ExtractInterrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import JobInterrupted
from featurestore.extractor import Extractor
from featurestore.images import ImageError, load_image
from featurestore.lock import FolderLock, store_lock
from featurestore.signals import StopOnSignal
from featurestore.sources import Source, SourceImage, discover
from featurestore.splits import SplitFractions, split_of
from featurestore.store import FeatureStore
from featurestore.writer import Row, StoreWriter


class ExtractInterrupted(JobInterrupted):
    """Stopped by a signal after committing the finished work."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum, "finished work is committed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    source: Path
    store: Path
    weights: str = "imagenet"
    input_size: int = 150
    batch_size: int = 32
    workers: int = 4
    dtype: str = "float32"
    precision: str = "float32"
    extra_layers: tuple[str, ...] = ()
    flip_views: bool = False
    split_fractions: SplitFractions = dataclasses.field(default_factory=SplitFractions)
    labels: str | None = "inferred"
    rebuild: bool = False
    rehash: bool = False
    commit_every: int = 512
    commit_seconds: float = 60.0
    progress: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractSummary:
    discovered: int
    new: int
    changed: int
    retried: int
    removed: int
    unchanged: int
    failed: int
    computed: int
    seconds: float
    images_per_s: float
    store_bytes: int
    failures: dict[str, str]

    def line(self) -> str:
        return (
            f"discovered {self.discovered}, new {self.new}, changed {self.changed}, "
            f"retried {self.retried}, removed {self.removed}, unchanged {self.unchanged}, "
            f"failed {self.failed}; "
            f"{self.computed} through the model in {self.seconds:.1f} s "
            f"({self.images_per_s:.1f} images/s); store {self.store_bytes / 2**20:.1f} MiB"
        )


@dataclasses.dataclass(frozen=True)
class _Task:
    image: SourceImage
    kind: str  # "new", "changed", or "retried" (failed last time)


def run_extract(config: ExtractConfig, extractor: Extractor | None = None) -> ExtractSummary:
    """Run one extraction; see the module docstring. Returns the summary."""
    started = time.perf_counter()
    source = discover(config.source, labels=config.labels)
    Path(config.store).mkdir(parents=True, exist_ok=True)
    with store_lock(Path(config.store)) as lock:  # refuse a second writer before any costly work
        return _extract_locked(config, source, extractor, lock, started)


def _extract_locked(
    config: ExtractConfig, source: Source, extractor: Extractor | None, lock: FolderLock, started: float
) -> ExtractSummary:
    extractor = extractor or Extractor(
        weights=config.weights,
        input_size=config.input_size,
        extra_layers=config.extra_layers,
        dtype=config.dtype,
        precision=config.precision,
        flip_views=config.flip_views,
        batch_size=config.batch_size,
    )
    with StoreWriter(
        config.store,
        fingerprint=extractor.fingerprint,
        split_fractions=config.split_fractions,
        source_root=str(source.root),
        class_names=source.class_names,
        rebuild=config.rebuild,
        lock=lock,
    ) as writer:
        assert writer.manifest is not None
        current = FeatureStore(writer.path, writer.manifest)
        tasks, unchanged, deleted = _diff(source, current, rehash=config.rehash)
        skipped = {relpath: {"reason": reason} for relpath, reason in source.skipped}
        run = _Run(config, extractor, writer, current)
        with StopOnSignal() as stop:
            try:
                run.process(tasks, stop)
            finally:
                run.flush(deleted=deleted, failures=skipped, force=True)
            if stop.signum:
                raise ExtractInterrupted(stop.signum)
    seconds = time.perf_counter() - started
    counts = {kind: sum(1 for t in tasks if t.kind == kind) for kind in ("new", "changed", "retried")}
    return ExtractSummary(
        discovered=len(source.images) + len(source.skipped),
        new=counts["new"],
        changed=counts["changed"],
        retried=counts["retried"],
        removed=len(deleted),
        unchanged=len(unchanged) + run.touched,
        failed=len(run.failures) + len(skipped),
        computed=run.computed,
        seconds=seconds,
        images_per_s=run.computed / run.model_seconds if run.model_seconds else 0.0,
        store_bytes=sum(p.stat().st_size for p in Path(config.store).rglob("*") if p.is_file()),
        failures={
            **{k: v["reason"] for k, v in run.failures.items()},
            **{k: v["reason"] for k, v in skipped.items()},
        },
    )


def _diff(source: Source, store: FeatureStore, *, rehash: bool) -> tuple[list[_Task], list[str], list[str]]:
    """Split the source into tasks (new, changed), unchanged relpaths, and deleted relpaths."""
    live = {row["paths"]: row for row in store.live_rows()}
    tasks, unchanged = [], []
    for image in source.images:
        row = live.get(image.relpath)
        if row is None:
            tasks.append(_Task(image, "retried" if image.relpath in store.failures else "new"))
            continue
        try:
            stat = image.path.stat()
        except OSError:
            tasks.append(_Task(image, "changed"))  # the worker records why it cannot be read
            continue
        same_stat = stat.st_size == row["sizes"] and stat.st_mtime_ns == row["mtime_ns"]
        same_label = (image.label or "") == row["labels"]
        if same_stat and same_label and not rehash:
            unchanged.append(image.relpath)
        else:
            tasks.append(_Task(image, "changed"))
    in_source = {image.relpath for image in source.images}
    deleted = [relpath for relpath in live if relpath not in in_source]
    return tasks, unchanged, deleted


@dataclasses.dataclass
class _Decoded:
    task: _Task
    image_id: str = ""
    size: int = 0
    mtime_ns: int = 0
    pixels: np.ndarray | None = None
    error: str | None = None


def _decode(task: _Task, input_size: int, known_ids: set[str], current_id: str | None) -> _Decoded:
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


class _Run:
    """State of one extraction: pending rows, failures, counters."""

    def __init__(
        self, config: ExtractConfig, extractor: Extractor, writer: StoreWriter, current: FeatureStore
    ):
        self.config = config
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

    def process(self, tasks: list[_Task], stop: StopOnSignal) -> None:
        bar = _progress(len(tasks), self.config.progress)
        batch: list[_Decoded] = []
        for decoded in self._decoded(tasks, stop):
            bar.update(1)
            if decoded.error is not None:
                self._fail(decoded)
            elif decoded.pixels is None:
                self._reuse(decoded)
            else:
                batch.append(decoded)
            if len(batch) >= self.config.batch_size:
                self._embed(batch)
                batch = []
                bar.set_postfix_str(f"{self.computed / max(self.model_seconds, 1e-9):.1f} img/s model")
            self.flush()
        if batch:
            self._embed(batch)
        bar.close()

    def _decoded(self, tasks: list[_Task], stop: StopOnSignal) -> Iterator[_Decoded]:
        """Decode in worker threads, a bounded window ahead, yielding results in order."""
        window = max(2 * self.config.batch_size, 4 * self.config.workers)
        with ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="decode") as pool:
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

    def _submit(self, pool: ThreadPoolExecutor, task: _Task) -> Future[_Decoded]:
        current_id = self.live_ids.get(task.image.relpath)
        return pool.submit(_decode, task, self.config.input_size, self.known_ids, current_id)

    def _row(self, decoded: _Decoded, maps: dict[str, np.ndarray]) -> Row:
        image = decoded.task.image
        return Row(
            relpath=image.relpath,
            image_id=decoded.image_id,
            label=image.label,
            split=split_of(decoded.image_id, self.config.split_fractions),
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
        self.model_seconds += time.perf_counter() - started
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
        due = len(self.pending) >= self.config.commit_every or (
            self.pending and time.monotonic() - self.last_commit >= self.config.commit_seconds
        )
        if not (due or force):
            return
        recorded = self.writer.manifest.failures  # type: ignore[union-attr]
        all_failures = {**self.failures, **(failures or {})}
        # The final commit forgets failures of images that are gone or now fine.
        stale = [k for k in recorded if k not in all_failures] if force else []
        if not (self.pending or deleted or stale or all_failures.keys() - recorded.keys()):
            return  # nothing changed: leave the manifest as it is
        self.writer.commit_rows(self.pending, deleted=deleted or (), failures=all_failures, resolved=stale)
        for row in self.pending:
            self.known_ids.add(row.image_id)
        self.pending = []
        self.last_commit = time.monotonic()


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=not enabled or not sys.stderr.isatty(), file=sys.stderr)
