"""The extraction pipeline: decode ahead, run the model in batches, commit pieces behind it.

Three stages, each bounded so that memory stays flat, arranged so the model never waits:
- decode: worker threads, or worker processes where decoding is the bottleneck (a GPU), read
  each file once, hash it and decode the same bytes (`featurestore.decoding`), a bounded
  window of files ahead of the model, results in task order;
- model: the main thread runs fixed-size batches (`featurestore.extractor`);
- commit: a writer thread writes each piece (HDF5, checksum, fsync) and publishes the manifest
  while the model runs on the next batch; at most one piece waits for it.

Rows are committed in pieces every `commit_every` images or `commit_seconds`, so a kill loses
at most the pieces not yet committed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np

from featurestore.compute import check_compute
from featurestore.decoding import DecodedFile, decode_file
from featurestore.extractor import Extractor
from featurestore.fingerprint import Fingerprint
from featurestore.format import read_manifest
from featurestore.plan import Task
from featurestore.progress import Progress
from featurestore.signals import StopOnSignal
from featurestore.splits import SplitFractions, split_of
from featurestore.stages import StageTimes
from featurestore.store import FeatureStore, LiveIds
from featurestore.writer import Row, StoreWriter

#: Files per call to a decode process: amortises the inter-process round trip.
PROCESS_CHUNK = 8


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
    decode_in: str = "threads"  # "threads" or "processes" (resolved from "auto" by the caller)


@dataclasses.dataclass
class _Decoded:
    task: Task
    result: DecodedFile


@dataclasses.dataclass(frozen=True)
class _Known:
    """Ids whose maps are known: the store's, and the id the task's path has now."""

    ids: LiveIds | set[str]
    current: str | None

    def __contains__(self, image_id: object) -> bool:
        return image_id == self.current or image_id in self.ids


def _decode_chunk(
    jobs: list[tuple[str, str | None]], input_size: int, decoder: str
) -> tuple[list[DecodedFile], float]:
    """In a decode process: `decode_file` for (path, the path's live id) pairs, and the seconds
    it took (the decode stage's worker-seconds)."""
    started = time.perf_counter()
    results = [
        decode_file(path, input_size, decoder=decoder, skip_ids=frozenset({current} if current else ()))
        for path, current in jobs
    ]
    return results, time.perf_counter() - started


def _decode_one(task: Task, size: int, decoder: str, skip: _Known) -> tuple[list[DecodedFile], float]:
    """In a decode thread: `decode_file` for one task, and the seconds it took."""
    started = time.perf_counter()
    result = decode_file(task.image.path, size, decoder=decoder, skip_ids=skip)
    return [result], time.perf_counter() - started


def _ignore_interrupt() -> None:
    # Ctrl-C reaches the whole process group: the main process decides what happens.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Decoder:
    """Decoded results in task order, a bounded window ahead, from threads or processes."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        settings = pipeline.settings
        self.processes = settings.decode_in == "processes"
        self.chunk = PROCESS_CHUNK if self.processes else 1
        # Enough in flight to keep every worker busy, and a batch ready behind the model's.
        self.window = max(2 * settings.batch_size, 4 * settings.workers * self.chunk)

    def _pool(self) -> Executor:
        workers = self.pipeline.settings.workers
        if self.processes:
            # spawn: the parent has Keras' threads running; forking it would copy their locks.
            context = multiprocessing.get_context("spawn")
            return ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupt)
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")

    def _submit(self, pool: Executor, tasks: list[Task]) -> Future[tuple[list[DecodedFile], float]]:
        p = self.pipeline
        decoder = p.extractor.fingerprint.decoder
        size = p.settings.input_size
        if self.processes:
            jobs = [(str(t.image.path), p.live_ids.get(t.image.relpath)) for t in tasks]
            return pool.submit(_decode_chunk, jobs, size, decoder)
        (task,) = tasks
        skip = _Known(p.known_ids, p.live_ids.get(task.image.relpath))
        return pool.submit(_decode_one, task, size, decoder, skip)

    def __call__(self, tasks: list[Task], stop: StopOnSignal) -> Iterator[_Decoded]:
        chunks = (tasks[i : i + self.chunk] for i in range(0, len(tasks), self.chunk))
        with self._pool() as pool:
            ahead: deque[tuple[list[Task], Future[tuple[list[DecodedFile], float]]]] = deque()
            try:
                for chunk in chunks:
                    ahead.append((chunk, self._submit(pool, chunk)))
                    if len(ahead) * self.chunk >= self.window:
                        break
                while ahead and not stop.signum:
                    chunk, future = ahead.popleft()
                    results, seconds = future.result()
                    self.pipeline.times.add("decode", seconds, len(results))
                    for task, result in zip(chunk, results, strict=True):
                        yield _Decoded(task, result)
                    nxt = next(chunks, None)
                    if nxt is not None:
                        ahead.append((nxt, self._submit(pool, nxt)))
            finally:
                for _, future in ahead:
                    future.cancel()


@dataclasses.dataclass
class _Commit:
    rows: list[Row]
    failures: dict[str, dict[str, Any]]
    fingerprint: Fingerprint | None  # set on the first piece of computed rows


class _Committer:
    """Commits pieces in a writer thread, in order, with at most one piece waiting for it.

    The one `StoreWriter` is used by this thread only while it runs. A failed commit (a full
    disk) is raised once in the main thread, at the next hand-over or at `close`; the pieces
    handed over after it are dropped (their images are recomputed by the next run).
    """

    def __init__(
        self, writer: StoreWriter, committed: Callable[[list[Row]], None], times: StageTimes
    ) -> None:
        self.writer = writer
        self.times = times
        self.committed = committed
        self.times = times
        self.jobs: queue.Queue[_Commit | None] = queue.Queue(maxsize=1)
        self.failed = False
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="commit", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                if not self.failed:
                    self._commit(job)
            except BaseException as exc:  # handed to the main thread
                self.failed, self._error = True, exc
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def _commit(self, job: _Commit) -> None:
        writer = self.writer
        assert writer.manifest is not None
        if job.fingerprint is not None:  # record the library versions that computed these rows
            writer.manifest = dataclasses.replace(writer.manifest, fingerprint=job.fingerprint)
        with self.times.timed("write", len(job.rows)):
            writer.commit_rows(job.rows, failures=job.failures)
        self.committed(job.rows)

    def submit(self, job: _Commit) -> None:
        self._raise()
        self.jobs.put(job)

    def drain(self) -> None:
        """Wait until every handed-over piece is committed."""
        self.jobs.join()
        self._raise()

    def close(self) -> None:
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


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
        self.recorded = recorded_fingerprint(writer, current)
        # {relpath: id} and the ids of the live rows: built by `process` when there are tasks
        # (a no-change run over a million rows makes none of these strings)
        self.live_ids: LiveIds | dict[str, str] = {}
        self.known_ids: LiveIds | set[str] = set()
        self.pending: list[Row] = []
        self.in_flight: dict[str, dict[str, np.ndarray]] = {}  # id -> maps, handed to the writer
        self.failures: dict[str, dict[str, Any]] = {}
        self.computed = 0
        self.touched = 0
        self.model_seconds = 0.0
        self.last_commit = time.monotonic()
        self._new_fingerprint: Fingerprint | None = None
        self._committer: _Committer | None = None

    def process(self, tasks: list[Task], stop: StopOnSignal) -> None:
        if tasks:  # before the writer thread starts: it adds to known_ids
            self.live_ids = self.known_ids = self.current.live_id_lookup()
        bar = self.progress or Progress(len(tasks), label="extract", enabled=self.settings.progress)
        batch: list[_Decoded] = []
        self._committer = _Committer(self.writer, self._committed, self.times)
        for done, decoded in enumerate(_Decoder(self)(tasks, stop), 1):
            result = decoded.result
            if result.error is not None:
                self._fail(decoded)
            elif result.pixels is None or self._maps_known(result.image_id):
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

    def _maps_known(self, image_id: str) -> bool:
        """Content already embedded (a copy decoded in a process, which checks less)."""
        return image_id in self.known_ids or image_id in self.in_flight

    def _row(self, decoded: _Decoded, maps: dict[str, np.ndarray]) -> Row:
        image, result = decoded.task.image, decoded.result
        return Row(
            relpath=image.relpath,
            image_id=result.image_id,
            label=image.label,
            split=split_of(result.image_id, self.settings.split_fractions),
            size=result.size,
            mtime_ns=result.mtime_ns,
            maps=maps,
        )

    def _embed(self, batch: list[_Decoded]) -> None:
        if not self.computed:
            check_compute(self.writer.path, self.extractor.fingerprint, self.recorded)
            self._new_fingerprint = self.extractor.with_library_versions()
        started = time.perf_counter()
        pixels = np.stack([d.result.pixels for d in batch]).astype(np.float32)  # type: ignore[misc]
        maps = self.extractor.embed(pixels, [d.result.image_id for d in batch])
        seconds = time.perf_counter() - started
        self.model_seconds += seconds
        self.times.add("model", seconds, len(batch))
        self.computed += len(batch)
        for i, decoded in enumerate(batch):
            self.pending.append(self._row(decoded, {name: m[i] for name, m in maps.items()}))

    def _reuse(self, decoded: _Decoded) -> None:
        image_id = decoded.result.image_id
        maps = self.current.maps_of_id(image_id) or self.in_flight.get(image_id)
        if maps is None:  # first seen in this run: still pending, or committed since the start
            pending = (r.maps for r in self.pending if r.image_id == image_id)
            maps = next(pending, None) or self._committed_maps(image_id)
        if self.live_ids.get(decoded.task.image.relpath) == image_id:
            self.touched += 1  # same bytes, new mtime: rewrite the row so the stat fast path holds
        self.pending.append(self._row(decoded, maps))

    def _committed_maps(self, image_id: str) -> dict[str, np.ndarray] | None:
        if self._committer is not None:
            self._committer.drain()  # the writer's manifest is then this thread's to read
        return FeatureStore(self.writer.path, self.writer.manifest).maps_of_id(image_id)

    def _committed(self, rows: list[Row]) -> None:
        """In the writer thread, once `rows` are committed: their maps are in the store."""
        for row in rows:
            self.known_ids.add(row.image_id)
        for row in rows:
            self.in_flight.pop(row.image_id, None)

    def _fail(self, decoded: _Decoded) -> None:
        image, result = decoded.task.image, decoded.result
        self.failures[image.relpath] = {
            "reason": result.error,
            "size": result.size,
            "mtime_ns": result.mtime_ns,
        }
        print(f"skipped {image.path}: {result.error}", file=sys.stderr)

    def flush(
        self,
        *,
        deleted: list[str] | None = None,
        failures: dict[str, dict[str, Any]] | None = None,
        force: bool = False,
    ) -> None:
        """Commit the pending rows when due (in the writer thread), or now with `force` (the
        final commit, with deletions and failures, after the writer thread finished)."""
        due = len(self.pending) >= self.settings.commit_every or (
            self.pending and time.monotonic() - self.last_commit >= self.settings.commit_seconds
        )
        if force:
            if not self._finish_commits():
                return  # a commit failed (raised already): no second attempt
            self._commit_now(deleted or [], {**self.failures, **(failures or {})})
        elif due and self._committer is not None:
            rows, self.pending = self.pending, []
            for row in rows:
                self.in_flight[row.image_id] = row.maps
            fingerprint, self._new_fingerprint = self._new_fingerprint, None
            self._committer.submit(_Commit(rows, dict(self.failures), fingerprint))
            self.last_commit = time.monotonic()

    def _finish_commits(self) -> bool:
        """Stop the writer thread once it has committed what it holds; False if a commit failed."""
        committer, self._committer = self._committer, None
        if committer is not None:
            committer.close()
            return not committer.failed
        return True

    def _commit_now(self, deleted: list[str], all_failures: dict[str, dict[str, Any]]) -> None:
        assert self.writer.manifest is not None
        if self._new_fingerprint is not None:
            self.writer.manifest = dataclasses.replace(
                self.writer.manifest, fingerprint=self._new_fingerprint
            )
            self._new_fingerprint = None
        recorded = self.writer.manifest.failures
        # The final commit forgets failures of images that are gone or now fine.
        stale = [k for k in recorded if k not in all_failures]
        if not (self.pending or deleted or stale or all_failures.keys() - recorded.keys()):
            return  # nothing changed: leave the manifest as it is
        with self.times.timed("write", len(self.pending)):
            self.writer.commit_rows(self.pending, deleted=deleted, failures=all_failures, resolved=stale)
        self._committed(self.pending)
        self.pending = []
        self.last_commit = time.monotonic()


def recorded_fingerprint(writer: StoreWriter, current: FeatureStore) -> Fingerprint | None:
    """The committed fingerprint of the rows the store holds (None when it holds none), whose
    provenance (library versions, backend, device) is kept by commits that compute nothing."""
    if not len(current):
        return None
    recorded = read_manifest(writer.path).fingerprint
    assert writer.manifest is not None
    writer.manifest = dataclasses.replace(
        writer.manifest,
        fingerprint=dataclasses.replace(
            writer.manifest.fingerprint, library_versions=recorded.library_versions
        ),
    )
    return recorded
