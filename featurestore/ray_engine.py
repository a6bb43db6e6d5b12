"""The Ray engine of `featurestore extract --engine ray`: the tasks of a plan run on a Ray cluster.

The driver (this process) has already done what the local engine does before any model runs:
the lock, discovery, the diff against the manifest with its stat fast path (`featurestore.extract`).
Only the new and changed images become a Ray Data dataset:

    decode (CPU tasks) -> model (actor pool, one Extractor each) -> write pieces (CPU tasks)

Pieces are written by the workers, straight into STORE/pieces: the store must be on a file
system that every node mounts at the same path (NFS, Lustre, or a single machine). Why not
return the maps to the driver? At 32 KB of maps per image, a few GPUs already produce hundreds
of MB/s; through the driver that is one network link and one process, while workers writing
spread it over the shared file system's servers. Only small columns come back.

The driver commits in waves with `StoreWriter.commit`: every `commit_every` rows or
`commit_seconds`, one manifest names the pieces that came back since the last one. A crash of
the driver or the cluster loses at most one wave: its pieces are orphans, deleted by the next
writer (and at the end of this run, for those of retried tasks), and the next run resumes
through the same manifest diff. A piece is committed at most once and a path at most once per
run, so no row is ever committed twice, even when Ray retries a task or restarts an actor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.errors import FeaturestoreError
from featurestore.extract_config import ExtractConfig
from featurestore.extractor import Extractor
from featurestore.format import PIECES, PieceInfo, read_manifest
from featurestore.pipeline import recorded_fingerprint
from featurestore.plan import Task
from featurestore.progress import Progress
from featurestore.ray_stages import (
    ModelStage,
    decode_batch,
    extractor_settings,
    known_ids_array,
    write_batch,
)
from featurestore.signals import StopOnSignal
from featurestore.splits import split_of
from featurestore.stages import StageTimes
from featurestore.store import FeatureStore
from featurestore.writer import Row, StoreWriter

#: Environment of the cluster's workers: TensorFlow's start-up lines stay out of the driver's log.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
#: Passed on to the workers when the driver has them: HDF5's own file locks are off on network
#: file systems without lock support (docs/scaling.md); the store's writer lock is ours.
PASSED_ON = ("HDF5_USE_FILE_LOCKING",)


def worker_env() -> dict[str, str]:
    return {**WORKER_ENV, **{name: os.environ[name] for name in PASSED_ON if name in os.environ}}


#: Batches per piece written by a worker, at most (a wave is one or more pieces): pieces large
#: enough for long sequential reads, small enough that rows come back to the driver steadily.
PIECE_BATCHES = 8


class RayEngineError(FeaturestoreError):
    """The Ray cluster cannot be reached, or failed the run (finished work is committed)."""


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayEngineError("--engine ray needs Ray: pip install 'featurestore[ray]'") from None
    return ray


@dataclasses.dataclass
class Cluster:
    """The cluster this run uses, and whether this run started it (then it stops it)."""

    address: str
    nodes: int
    cpus: float
    gpus: float
    started_here: bool
    startup_seconds: float

    def model_actors(self) -> int:
        """One actor per GPU; on CPUs one per node (TensorFlow uses all of a node's cores)."""
        return int(self.gpus) if self.gpus >= 1 else max(1, self.nodes)

    def line(self) -> str:
        return (
            f"extract: Ray cluster {self.address}: {self.nodes} worker node(s), {self.cpus:g} CPUs, "
            f"{self.gpus:g} GPUs; {self.model_actors()} model actor(s); connected in "
            f"{self.startup_seconds:.1f} s"
        )


def connect(address: str | None) -> Cluster:
    """Join the cluster at `address` ("auto", "ray://...", host:port), the one this process is
    already connected to, or (no address, no RAY_ADDRESS) start a local one for this run."""
    ray = import_ray()
    started = time.perf_counter()
    started_here = False
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                runtime_env={"env_vars": worker_env()},
                logging_level=logging.WARNING,
                configure_logging=True,
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = address or "a local cluster"
            raise RayEngineError(f"--ray-address {where}: cannot connect ({_first_line(exc)})") from None
        started_here = True
    resources = ray.cluster_resources()
    # nodes that can run a task (a head started with --num-cpus 0 only hosts the driver)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node["Resources"].get("CPU", 0) >= 1)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver prints its own progress lines...
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # ...and says so
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset start/finish lines
    context.print_on_execution_start = False
    return Cluster(
        address=ray.get_runtime_context().gcs_address,
        nodes=nodes,
        cpus=resources.get("CPU", 0.0),
        gpus=resources.get("GPU", 0.0),
        started_here=started_here,
        startup_seconds=time.perf_counter() - started,
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RayRun:
    """One extraction's tasks on Ray; the same counters and `flush` as `featurestore.pipeline`."""

    def __init__(
        self,
        config: ExtractConfig,
        extractor: Extractor,
        writer: StoreWriter,
        current: FeatureStore,
        times: StageTimes,
        progress: Progress,
    ):
        self.config = config
        self.extractor = extractor
        self.writer = writer
        self.current = current
        self.live_ids = current.live_ids_by_path()
        self.recorded = recorded_fingerprint(writer, current)
        self.versions: tuple[tuple[str, str], ...] | None = None  # of the model actors
        self.known_ids = set(self.live_ids.values())
        self.failures: dict[str, dict[str, Any]] = {}
        self.computed = 0
        self.touched = 0
        self.model_seconds = 0.0
        self.wave_pieces: list[PieceInfo] = []
        self.wave_relpaths: list[str] = []
        self.wave_set: set[str] = set()
        self.reused: list[Row] = []
        self.seen_pieces: set[str] = set()
        self.committed: set[str] = set()  # relpaths committed by this run
        self.times = times  # worker-seconds of decode, model and write; the driver's commits
        self.progress = progress
        self.write_nodes: set[str] = set()
        self.driver_node_pieces = 0
        self.driver_node = ""
        self.last_commit = time.monotonic()
        self.cluster: Cluster | None = None
        self._versions_recorded = False
        self.started = time.time()  # wall clock, as the actors report when they were ready
        self.ready_at: float | None = None

    # -- the run -------------------------------------------------------------------------
    def start(self) -> None:
        """Connect before the signal handlers go in: `ray.init` installs its own for SIGTERM."""
        self.cluster = connect(self.config.ray_address)
        self.driver_node = import_ray().get_runtime_context().get_node_id()
        print(self.cluster.line(), file=sys.stderr)

    def process(self, tasks: list[Task], stop: StopOnSignal) -> None:
        if not tasks:
            return
        if self.cluster is None:
            self.start()
        by_index = {i: task for i, task in enumerate(tasks)}
        progress = self.progress
        done = 0
        batches = self._results(tasks)
        try:
            for batch in batches:
                with self.times.timed("driver", len(batch["index"])):  # its work per row
                    self._take(batch, [by_index[int(i)] for i in batch["index"]])
                done += len(batch["index"])
                progress.update(done, len(self.failures))
                self.flush()
                if stop.signum:
                    break
        except Exception as exc:
            if stop.signum:  # Ctrl-C reached the cluster's processes too: keep what came back
                return
            if isinstance(exc, FeaturestoreError):
                raise
            ray = import_ray()
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FeaturestoreError):  # raised on a worker: its one line, its exit code
                raise cause from None
            if isinstance(exc, ray.exceptions.RayError):
                raise RayEngineError(f"Ray failed the run: {_first_line(exc)}") from exc
            raise
        finally:
            getattr(batches, "close", lambda: None)()  # stops the stream's execution
            if self.ready_at is not None:
                self.times.add("startup", max(0.0, self.ready_at - self.started))
            progress.close()

    def _results(self, tasks: list[Task]) -> Iterator[dict[str, np.ndarray]]:
        """The dataset of the tasks, executed as a stream; batches of rows as they finish."""
        ray = import_ray()
        assert self.cluster is not None
        fingerprint = self.extractor.fingerprint
        size = self.config.batch_size
        piece_rows = min(self.config.commit_every, PIECE_BATCHES * size)
        items = [
            {
                "index": i,
                "path": str(task.image.path),
                "relpath": task.image.relpath,
                "label": task.image.label or "",
                "current": self.live_ids.get(task.image.relpath, ""),
            }
            for i, task in enumerate(tasks)
        ]
        known = ray.put(known_ids_array(self.known_ids))
        gpus = self.cluster.gpus >= 1
        actors = self.cluster.model_actors()
        dataset = (
            ray.data.from_items(items, override_num_blocks=max(1, len(items) // size))
            .map_batches(
                _decode_with_ref,
                batch_size=size,
                fn_kwargs={
                    "input_size": self.config.input_size,
                    "decoder": self.extractor.decoder,
                    "known": [known],
                },
                num_cpus=1,
            )
            .map_batches(
                ModelStage,
                batch_size=size,
                fn_constructor_args=(
                    extractor_settings(self.extractor),
                    fingerprint,
                    str(self.writer.path.resolve()),
                    self.recorded,
                ),
                runtime_env={"env_vars": worker_env()},
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                num_gpus=1 if gpus else 0,
                num_cpus=1,
                # Ray Data restarts a dead actor and retries its batch (max_restarts=-1 and
                # max_task_retries=-1 are its defaults for actor pools).
            )
            .map_batches(
                write_batch,
                batch_size=piece_rows,
                fn_kwargs={
                    "store": str(self.writer.path.resolve()),
                    "fingerprint": fingerprint,
                    "fractions": self.config.split_fractions,
                },
                num_cpus=0.5,
                runtime_env={"env_vars": worker_env()},
            )
        )
        return iter(dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0))

    def _note_versions(self, versions: np.ndarray) -> None:
        if self.versions is None:
            reported = [v for v in versions if v]
            if reported:
                self.versions = tuple(tuple(pair) for pair in json.loads(reported[0]))

    def _note_ready(self, ready_at: np.ndarray) -> None:
        """Start-up: from connecting to the first model actor ready to run a batch (Ray, the
        actors' TensorFlow and model); the part of a run that does not grow with its images."""
        first = float(ready_at[ready_at > 0].min()) if (ready_at > 0).any() else None
        if first is not None and (self.ready_at is None or first < self.ready_at):
            self.ready_at = first

    def _take(self, batch: dict[str, np.ndarray], tasks: list[Task]) -> None:
        """Rows back from the cluster: failures, reuses, and rows in written pieces. Timings are
        summed per batch: the driver's work per row is what limits a large cluster."""
        self._note_ready(batch["model_ready_at"])
        self._note_versions(batch["versions"])
        computed = batch["has_pixels"] & (batch["error"] == "")
        self.times.add("decode", float(batch["decode_seconds"].sum()), len(tasks))
        if computed.any():
            model_seconds = float(batch["model_seconds"][computed].sum())
            self.model_seconds += model_seconds
            self.computed += int(computed.sum())
            self.times.add("model", model_seconds, int(computed.sum()))
            self.times.add("write", float(batch["write_seconds"][computed].sum()), int(computed.sum()))
        for i, task in enumerate(tasks):
            relpath = task.image.relpath
            error = str(batch["error"][i])
            if error:
                self.failures[relpath] = {
                    "reason": error,
                    "size": int(batch["size"][i]),
                    "mtime_ns": int(batch["mtime_ns"][i]),
                }
                print(f"skipped {task.image.path}: {error}", file=sys.stderr)
                continue
            if relpath in self.committed or relpath in self.wave_set:
                raise RayEngineError(f"{relpath}: came back twice from the cluster")  # never commit twice
            self.wave_set.add(relpath)
            self.wave_relpaths.append(relpath)
            if not computed[i]:
                self._reuse(task, str(batch["image_id"][i]), int(batch["size"][i]), int(batch["mtime_ns"][i]))
                continue
            piece = str(batch["piece"][i])
            if piece not in self.seen_pieces:
                self.seen_pieces.add(piece)
                self.wave_pieces.append(
                    PieceInfo(
                        file=piece,
                        rows=int(batch["piece_rows"][i]),
                        sha256=str(batch["piece_sha256"][i]),
                        generation=0,
                    )
                )
                node = str(batch["node"][i])
                self.write_nodes.add(node)
                self.driver_node_pieces += node == self.driver_node

    def _reuse(self, task: Task, image_id: str, size: int, mtime_ns: int) -> None:
        """Content already in the store (a rename, a copy, a touch): its maps, a new row."""
        maps = self.current.maps_of_id(image_id)
        assert maps is not None, "the decode stage only skips ids of the store's live rows"
        if self.live_ids.get(task.image.relpath) == image_id:
            self.touched += 1  # same bytes, new mtime: rewrite the row so the stat fast path holds
        self.reused.append(
            Row(
                relpath=task.image.relpath,
                image_id=image_id,
                label=task.image.label,
                split=split_of(image_id, self.config.split_fractions),
                size=size,
                mtime_ns=mtime_ns,
                maps=maps,
            )
        )

    # -- commits -------------------------------------------------------------------------
    def flush(
        self,
        *,
        deleted: list[str] | None = None,
        failures: dict[str, dict[str, Any]] | None = None,
        force: bool = False,
    ) -> None:
        """Commit the wave (the pieces that came back since the last commit) when it is due."""
        rows = len(self.wave_relpaths)
        due = rows >= self.config.commit_every or (
            rows and time.monotonic() - self.last_commit >= self.config.commit_seconds
        )
        if not (due or force):
            return
        started = time.perf_counter()
        writer = self.writer
        assert writer.manifest is not None
        recorded = writer.manifest.failures
        all_failures = {**self.failures, **(failures or {})}
        stale = [k for k in recorded if k not in all_failures] if force else []
        if rows or deleted or stale or all_failures.keys() - recorded.keys():
            if self.wave_pieces and not self._versions_recorded and self.versions is not None:
                # the libraries and device kind of the actors that computed these rows, as the
                # local engine records its own
                fingerprint = dataclasses.replace(self.extractor.fingerprint, library_versions=self.versions)
                writer.manifest = dataclasses.replace(writer.manifest, fingerprint=fingerprint)
                self._versions_recorded = True
            pieces = list(self.wave_pieces)
            if self.reused:
                pieces.append(writer.write_piece(self.reused))
            writer.commit(
                pieces, deleted=deleted or (), failures=all_failures, resolved=[*stale, *self.wave_relpaths]
            )
            self.committed.update(self.wave_relpaths)
            self.known_ids.update(row.image_id for row in self.reused)
            self.times.add("commit", time.perf_counter() - started, rows)
        self.wave_pieces, self.wave_relpaths, self.reused = [], [], []
        self.wave_set = set()
        self.last_commit = time.monotonic()
        if force:
            self._remove_uncommitted()

    def _remove_uncommitted(self) -> None:
        """Pieces that workers wrote and no manifest names (a retried task's first attempt, a
        wave cut short by a signal): nothing can name them any more, as the writer holds the lock."""
        if self.cluster is None:
            return
        on_disk = read_manifest(self.writer.path)
        assert self.writer.manifest is not None
        named = {Path(p.file).name for p in (*on_disk.pieces, *self.writer.manifest.pieces)}
        for entry in (self.writer.path / PIECES).iterdir():
            if entry.name not in named:
                entry.unlink(missing_ok=True)

    def close(self) -> None:
        """Let Ray Data's driver threads that call into Ray end, then disconnect if this run
        connected (see RAY_DATA_THREADS)."""
        if self.cluster is None:
            return
        left = join_ray_data_threads(timeout=RAY_DATA_JOIN_SECONDS)
        if left:
            print(f"extract: Ray Data thread(s) still running at exit: {', '.join(left)}", file=sys.stderr)
        if self.cluster.started_here:
            import_ray().shutdown()

    def placement(self) -> str:
        """Where the pieces were written: the store must be shared when that is not here."""
        return (
            f"extract: {len(self.seen_pieces)} piece(s) written by workers on {len(self.write_nodes)} "
            f"node(s), {self.driver_node_pieces} of them on the driver's node"
        )


#: Driver threads of a Ray Data execution that call into Ray: the executor's (which
#: `StreamingExecutor.shutdown` waits 2 s for) and `iter_batches`' batch makers (which a closed
#: stream only asks to stop). On a loaded machine one can still be mid-call when the driver
#: disconnects, and a call into Ray while `ray.shutdown()` runs ends the process at once with
#: exit 1 ("The core worker has already been shutdown"), before the run's own line and code.
RAY_DATA_THREADS = ("StreamingExecutor-", "ray-data-metadata-prefetch", "iter_threaded")
RAY_DATA_JOIN_SECONDS = 60.0


def join_ray_data_threads(timeout: float) -> list[str]:
    """Wait up to `timeout` seconds for the RAY_DATA_THREADS of Ray Data executions that were
    shut down (a stream run to its end or closed); the names of those still running."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith(RAY_DATA_THREADS):
            thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threading.enumerate() if t.name.startswith(RAY_DATA_THREADS) and t.is_alive()]


@contextlib.contextmanager
def ray_run(
    config: ExtractConfig,
    extractor: Extractor,
    writer: StoreWriter,
    current: FeatureStore,
    times: StageTimes,
    progress: Progress,
    *,
    connect: bool,
) -> Iterator[RayRun]:
    """A `RayRun`, connected to its cluster when there is work (and that cluster stopped after,
    if this run started it)."""
    run = RayRun(config, extractor, writer, current, times, progress)
    try:
        if connect:
            run.start()
        yield run
        if run.seen_pieces:
            print(run.placement(), file=sys.stderr)
    finally:
        run.close()


def _decode_with_ref(
    batch: dict[str, np.ndarray], *, input_size: int, decoder: str, known: list[Any]
) -> dict[str, np.ndarray]:
    """`decode_batch` with the known ids fetched from the object store (zero-copy on a node)."""
    ray = import_ray()
    return decode_batch(batch, input_size=input_size, decoder=decoder, known=ray.get(known[0]))
