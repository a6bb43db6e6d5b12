"""The extraction job: bring a store up to date with an image tree.

Lock the store, discover the source, diff it against the store (`featurestore.plan`), run the
new and changed images through the pipeline (`featurestore.pipeline`), commit. Only new or
changed images go through the model. SIGTERM and Ctrl-C commit what is done, then stop with
ExtractInterrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from featurestore.compact import drop_pieces, maybe_compact
from featurestore.compute import run_precision
from featurestore.errors import JobInterrupted
from featurestore.extract_config import ExtractConfig
from featurestore.extractor import Extractor
from featurestore.hardware import device_kind, gpu_possible
from featurestore.lock import FolderLock, store_lock
from featurestore.pipeline import Pipeline, PipelineSettings
from featurestore.plan import plan_extraction
from featurestore.progress import Progress
from featurestore.signals import StopOnSignal
from featurestore.sources import Source, discover
from featurestore.stages import StageTimes
from featurestore.store import FeatureStore, is_store, open_store
from featurestore.unreadable import kept_class_names, refuse_a_lossy_rebuild, report_unreadable
from featurestore.verify import damaged_pieces
from featurestore.writer import StoreWriter


class ExtractInterrupted(JobInterrupted):
    """Stopped by a signal after committing the finished work; `record_fields` are the run
    record's counts and stages of what was done (featurestore.runs)."""

    def __init__(self, signum: int, record_fields: dict[str, Any] | None = None) -> None:
        super().__init__(signum, "finished work is committed")
        self.record_fields = record_fields or {}


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
    # seconds, images and images/s of discover, plan, decode, model, write and total
    stages: dict[str, dict[str, float | int | None]] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        return (
            f"discovered {self.discovered}, new {self.new}, changed {self.changed}, "
            f"retried {self.retried}, removed {self.removed}, unchanged {self.unchanged}, "
            f"failed {self.failed}; "
            f"{self.computed} through the model in {self.seconds:.1f} s "
            f"({self.images_per_s:.1f} images/s); store {self.store_bytes / 2**20:.1f} MiB"
        )


def run_extract(config: ExtractConfig, extractor: Extractor | None = None) -> ExtractSummary:
    """Run one extraction; see the module docstring. Returns the summary."""
    started = time.perf_counter()
    times = StageTimes()
    with times.timed("discover"):
        source = discover(config.source, labels=config.labels, stat=True)
    Path(config.store).mkdir(parents=True, exist_ok=True)
    with store_lock(Path(config.store)) as lock:  # refuse a second writer before any costly work
        return _extract_locked(config, source, extractor, lock, started, times)


def _extract_locked(
    config: ExtractConfig,
    source: Source,
    extractor: Extractor | None,
    lock: FolderLock,
    started: float,
    times: StageTimes,
) -> ExtractSummary:
    class_names = source.class_names
    if source.unreadable_folders() and is_store(config.store):
        live = open_store(config.store)
        if config.rebuild:
            refuse_a_lossy_rebuild(source, live.rows.paths[live.live].tolist())
        class_names = kept_class_names(source, live.class_names)
    extractor = extractor or Extractor(
        weights=config.weights,
        input_size=config.input_size,
        extra_layers=config.extra_layers,
        dtype=config.dtype,
        precision=run_precision(config.precision, config.store, rebuild=config.rebuild),
        flip_views=config.flip_views,
        views=config.views,
        decoder=config.decoder,
        batch_size=config.batch_size,
    )
    with StoreWriter(
        config.store,
        fingerprint=extractor.fingerprint,
        split_fractions=config.split_fractions,
        source_root=str(source.root),
        class_names=class_names,
        rebuild=config.rebuild,
        lock=lock,
    ) as writer:
        assert writer.manifest is not None
        if config.repair:
            _repair(writer)
        current = FeatureStore(writer.path, writer.manifest)
        with times.timed("plan"):
            plan = plan_extraction(source, current, rehash=config.rehash)
        report_unreadable(source, plan.kept)
        skipped = {relpath: {"reason": reason} for relpath, reason in source.skipped}
        progress = Progress(
            len(plan.tasks), label="extract", interval=config.progress_interval, enabled=config.progress
        )
        # The engine connects first: ray.init installs its own SIGTERM handler, ours goes over it.
        engine = _engine(config, extractor, writer, current, times, progress, work=bool(plan.tasks))
        with engine as run, StopOnSignal() as stop:
            try:
                run.process(plan.tasks, stop)
            finally:
                run.flush(deleted=plan.deleted, failures=skipped, force=True)
            if stop.signum:
                times.add("total", time.perf_counter() - started, run.computed)
                done = {"computed": run.computed, "failed": len(run.failures)}
                raise ExtractInterrupted(stop.signum, {"counts": done, "stages": times.to_dict()})
        maybe_compact(writer)  # past its thresholds (see `featurestore info`)
    seconds = time.perf_counter() - started
    times.add("total", seconds, run.computed)
    return ExtractSummary(
        discovered=len(source.images) + len(source.skipped),
        new=plan.count("new"),
        changed=plan.count("changed"),
        retried=plan.count("retried"),
        removed=len(plan.deleted),
        unchanged=len(plan.unchanged) + run.touched,
        failed=len(run.failures) + len(skipped),
        computed=run.computed,
        seconds=seconds,
        images_per_s=run.computed / run.model_seconds if run.model_seconds else 0.0,
        store_bytes=sum(p.stat().st_size for p in Path(config.store).rglob("*") if p.is_file()),
        failures={
            **{k: v["reason"] for k, v in run.failures.items()},
            **{k: v["reason"] for k, v in skipped.items()},
        },
        stages=times.to_dict(),
    )


def _engine(
    config: ExtractConfig,
    extractor: Extractor,
    writer: StoreWriter,
    current: FeatureStore,
    times: StageTimes,
    progress: Progress,
    *,
    work: bool,
) -> contextlib.AbstractContextManager[Any]:
    """The run of the plan's tasks: this machine's pipeline, or a Ray cluster's (imported only then)."""
    if config.engine == "ray":
        from featurestore.ray_engine import ray_run

        return ray_run(config, extractor, writer, current, times, progress, connect=work)
    settings = _settings(config, work)
    return contextlib.nullcontext(
        Pipeline(settings, extractor, writer, current, times=times, progress=progress)
    )


def _repair(writer: StoreWriter) -> None:
    """Drop the committed pieces whose bytes differ from the manifest: their rows are then
    missing from the store, so this run recomputes them (no --rebuild needed)."""
    damaged = damaged_pieces(writer.path)
    if damaged:
        rows = drop_pieces(writer, set(damaged))
        for file, reason in sorted(damaged.items()):
            print(f"repair: {file}: {reason}; its rows are recomputed", file=sys.stderr)
        print(
            f"repair: {len(damaged)} damaged pieces dropped, {rows} live rows to recompute", file=sys.stderr
        )


def _settings(config: ExtractConfig, has_tasks: bool) -> PipelineSettings:
    decode_in = config.decode_in
    if decode_in == "auto":  # the device probe imports the backend: only when there is work
        # and a GPU could be there (a run whose changed images are all known never needs Keras)
        on_gpu = has_tasks and gpu_possible() and device_kind() == "gpu"
        decode_in = "processes" if on_gpu else "threads"
    return PipelineSettings(
        decode_in=decode_in,
        input_size=config.input_size,
        batch_size=config.batch_size,
        workers=config.workers,
        split_fractions=config.split_fractions,
        commit_every=config.commit_every,
        commit_seconds=config.commit_seconds,
        progress=config.progress,
    )
