"""A job run as a scheduler sees it: its run record, drift check, metrics file and exit code.

`recorded_job` wraps any job on a store (extract, compact, train, finetune): a run record in
`STORE/runs/` (featurestore.runs) from start to end, however the job ends, and, if asked, the
record's figures in a Prometheus textfile (featurestore.metrics), also after a failed run.

`recorded_extract` is one extraction as the `extract` command runs it: the job, then the record's
counts, stages and store figures, the drift check of tonight's new rows against the earlier ones
(stored in the record), and the exit code (featurestore.exitcodes). Engines share it: the Ray
engine passes its own `job`, a function of the `ExtractConfig` that returns a summary with the
same fields (docs/schemas/extract-summary.schema.json), and gets the same record and exit codes.

    outcome = recorded_extract(config, RunOptions(strict=True, fail_on_drift=0.7))
    outcome.exit_code, outcome.summary["run"], outcome.drift

Another job on a store (compact, train, finetune) records itself the same way:

    with recorded_job(store_dir, "compact", metrics_file=path) as run:
        result = compact(store_dir)
        run.update(counts={...}, stages={"write": stage(seconds, rows)}, extra={...})
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore import exitcodes
from featurestore.checks import check_number
from featurestore.errors import ConfigError, FeaturestoreError, JobInterrupted
from featurestore.extract_config import ExtractConfig
from featurestore.format import is_store, read_manifest
from featurestore.runs import RunRecorder, last_success, list_runs, record_run

if TYPE_CHECKING:  # numpy and h5py are imported only by the jobs that open a store
    from featurestore.store import FeatureStore

#: Metrics files node_exporter's textfile collector reads.
METRICS_SUFFIX = ".prom"
#: Seconds between rewrites of a running extract's record ("updated" shows it is alive).
HEARTBEAT_SECONDS = 30.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What a scheduler asks of an extract run beyond the extraction (the CLI's options)."""

    strict: bool = False  # failed images make the exit code FAILED_IMAGES
    fail_on_drift: float | None = None  # drift at this domain-classifier AUC makes it DRIFT
    drift: bool = True  # check tonight's rows for drift at all (recorded either way)
    metrics_file: Path | None = None  # Prometheus textfile of the run record

    def __post_init__(self) -> None:
        if self.fail_on_drift is not None:
            check_number("fail-on-drift", self.fail_on_drift, 0.5, 1.0)
        check_metrics_file(self.metrics_file)


def check_metrics_file(path: Path | None) -> None:
    """Refuse a metrics file node_exporter would not read, before any work is done."""
    if path is not None and Path(path).suffix != METRICS_SUFFIX:
        raise ConfigError(
            f"--metrics-file {path}: node_exporter's textfile collector reads only *{METRICS_SUFFIX} files"
        )


@dataclasses.dataclass(frozen=True)
class ExtractOutcome:
    """What `recorded_extract` did: the `--json` summary, the exit code, the record, the drift."""

    summary: dict[str, Any]  # the job's summary plus "run", "drift" and "exit_code"
    line: str  # the job's one-line summary for people
    exit_code: int
    record: dict[str, Any]
    drift: Any | None  # featurestore.drift.DriftReport, when checked


@contextmanager
def recorded_job(
    store_dir: str | Path,
    kind: str,
    *,
    engine: str = "local",
    metrics_file: str | Path | None = None,
) -> Iterator[RunRecorder]:
    """Record one run of `kind` on the store (see the module docstring); yields the recorder,
    whose `update` adds counts, stages, drift, `exit_code` and kind-specific `extra`.

    The metrics file is written after the record's end, whether the job succeeded or not; a
    failure to write it is an error of its own after a successful job, and a warning after a
    failed one (it must not hide the job's own error).
    """
    check_metrics_file(None if metrics_file is None else Path(metrics_file))
    if kind != "extract":  # only extract creates its store; the others need one
        read_manifest(store_dir)
    run = record_run(store_dir, kind, engine=engine)
    failed = True
    try:
        with run:
            yield run
        failed = False
    finally:
        if metrics_file is not None:
            try:
                write_run_metrics(metrics_file, run.record, store_dir)
            except (OSError, FeaturestoreError) as exc:
                if not failed:
                    raise
                print(f"warning: cannot write metrics file {metrics_file}: {exc}", file=sys.stderr)


def write_run_metrics(path: str | Path, record: Mapping[str, Any], store_dir: str | Path) -> Path:
    """The record as a Prometheus textfile, labelled with the store's absolute path."""
    from featurestore.metrics import write_metrics

    kind = str(record.get("kind"))
    previous = last_success(store_dir, kind) if Path(store_dir).is_dir() else None
    return write_metrics(path, record, store=str(Path(store_dir).resolve()), last_success=previous)


@contextmanager
def heartbeat(run: RunRecorder, store_dir: Path, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Rewrite the running record from a thread while the block runs: first as soon as the
    store folder exists (extract creates it, so a run killed in its first night still leaves a
    record), then every `every` seconds. The block must not update the record meanwhile."""
    stop = threading.Event()

    def beat() -> None:
        while not store_dir.is_dir():
            if stop.wait(0.1):
                return
        while True:
            try:
                run.checkpoint()
            except OSError as exc:  # a full disk: the job's own outcome will say more
                print(f"warning: cannot write run record {run.path}: {exc}", file=sys.stderr)
            if stop.wait(every):
                return

    thread = threading.Thread(target=beat, name="run-record", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _open_before(store_dir: Path) -> FeatureStore | None:
    """The store as it was before the run (its live ids are tonight's baseline); None when
    there is no store yet."""
    if not is_store(store_dir):
        return None
    from featurestore.store import open_store

    return open_store(store_dir)


def _summary_dict(summary: Any) -> dict[str, Any]:
    return dict(summary) if isinstance(summary, Mapping) else dataclasses.asdict(summary)


def recorded_extract(
    config: ExtractConfig,
    options: RunOptions | None = None,
    *,
    engine: str = "local",
    job: Callable[[ExtractConfig], Any] | None = None,
) -> ExtractOutcome:
    """Run `job(config)` (default: featurestore.extract.run_extract) as one recorded run.

    Errors and interruptions propagate (the record says how the run ended; the CLI turns them
    into one line and their exit code); a finished run returns its outcome and exit code.
    """
    from featurestore.run_fields import extract_fields, store_fields
    from featurestore.store import open_store

    if job is None:
        from featurestore.extract import run_extract as job
    options = options or RunOptions()
    store_dir = Path(config.store)
    with recorded_job(store_dir, "extract", engine=engine, metrics_file=options.metrics_file) as run:
        before = _open_before(store_dir) if options.drift else None
        try:
            with heartbeat(run, store_dir):
                result = job(config)
        except JobInterrupted as exc:  # what the stopped run did (computed, failed, stages)
            run.update(**getattr(exc, "record_fields", {}))
            raise
        summary = _summary_dict(result)
        store = open_store(store_dir)
        run.update(**extract_fields(summary), **store_fields(store))
        report = None
        if before is not None and len(before):  # a first run has nothing earlier to compare with
            tonight = store.live_ids_added_since(before)
            if tonight:
                report = _check_drift(store, tonight, summary, options, store_dir)
                run.update(drift=report.to_dict())
        drifted = options.fail_on_drift is not None and report is not None and report.drifted
        code = exitcodes.exit_code_for_result(
            failed_images=int(summary.get("failed", 0)), strict=options.strict, drifted=drifted
        )
        run.update(exit_code=code)
    summary.update(run=run.record["id"], drift=run.record["drift"], exit_code=code)
    line = result.line() if hasattr(result, "line") else ""
    return ExtractOutcome(summary=summary, line=line, exit_code=code, record=run.record, drift=report)


def _check_drift(
    store: Any, tonight: set[str], summary: Mapping[str, Any], options: RunOptions, store_dir: Path
) -> Any:
    """Tonight's rows against the earlier ones, with tonight's failure rate against the
    earlier finished runs' (this run's own record is still "running": not counted)."""
    from featurestore.drift import DEFAULT_THRESHOLD, failure_rate
    from featurestore.drift_check import check_drift
    from featurestore.run_fields import failure_totals

    attempted = sum(int(summary.get(key, 0)) for key in ("new", "changed", "retried"))
    earlier_failed, earlier_attempted = failure_totals(list_runs(store_dir, kind="extract"))
    failures = failure_rate(int(summary.get("failed", 0)), attempted, earlier_failed, earlier_attempted)
    threshold = DEFAULT_THRESHOLD if options.fail_on_drift is None else options.fail_on_drift
    return check_drift(store, tonight, threshold=threshold, failures=failures)
