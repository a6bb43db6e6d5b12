"""The extraction job: bring a store up to date with an image tree.

Lock the store, discover the source, diff it against the store (`featurestore.plan`), run the
new and changed images through the pipeline (`featurestore.pipeline`), commit. Only new or
changed images go through the model. SIGTERM and Ctrl-C commit what is done, then stop with
ExtractInterrupted.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from featurestore.errors import JobInterrupted
from featurestore.extract_config import ExtractConfig
from featurestore.extractor import Extractor
from featurestore.lock import FolderLock, store_lock
from featurestore.pipeline import Pipeline, PipelineSettings
from featurestore.plan import plan_extraction
from featurestore.progress import Progress
from featurestore.signals import StopOnSignal
from featurestore.sources import Source, discover
from featurestore.stages import StageTimes
from featurestore.store import FeatureStore
from featurestore.writer import StoreWriter


class ExtractInterrupted(JobInterrupted):
    """Stopped by a signal after committing the finished work."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum, "finished work is committed")


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
        source = discover(config.source, labels=config.labels)
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
        with times.timed("plan"):
            plan = plan_extraction(source, current, rehash=config.rehash)
        skipped = {relpath: {"reason": reason} for relpath, reason in source.skipped}
        progress = Progress(
            len(plan.tasks), label="extract", interval=config.progress_interval, enabled=config.progress
        )
        run = Pipeline(_settings(config), extractor, writer, current, times=times, progress=progress)
        with StopOnSignal() as stop:
            try:
                run.process(plan.tasks, stop)
            finally:
                run.flush(deleted=plan.deleted, failures=skipped, force=True)
            if stop.signum:
                raise ExtractInterrupted(stop.signum)
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


def _settings(config: ExtractConfig) -> PipelineSettings:
    return PipelineSettings(
        input_size=config.input_size,
        batch_size=config.batch_size,
        workers=config.workers,
        split_fractions=config.split_fractions,
        commit_every=config.commit_every,
        commit_seconds=config.commit_seconds,
        progress=config.progress,
    )
