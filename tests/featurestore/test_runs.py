"""Run history: records after normal, failed, interrupted and killed runs; the store untouched."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from featurestore import exitcodes
from featurestore.errors import JobInterrupted
from featurestore.extract import ExtractConfig, run_extract
from featurestore.extractor import Extractor
from featurestore.lock import LockedError
from featurestore.run_fields import (
    extract_fields,
    failure_totals,
    failures_by_reason,
    reason_category,
    store_bytes,
    store_fields,
)
from featurestore.runs import RUNS, format_runs, last_success, list_runs, record_run
from featurestore.store import StoreError, open_store
from featurestore.testing import make_store
from featurestore.verify import verify_store
from tests.conftest import REPO_ROOT, write_image

SCHEMAS = REPO_ROOT / "docs" / "schemas"


def validate(record: dict) -> None:
    schema = json.loads((SCHEMAS / "run-record.schema.json").read_text())
    jsonschema.validate(record, schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    make_store(tmp_path / "store", rng.random((20, 1, 1, 8), np.float32), rng.integers(0, 2, 20), ["a", "b"])
    return tmp_path / "store"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_normal_run_leaves_a_finished_record_and_the_store_as_it_was(store: Path) -> None:
    manifest = (store / "manifest.json").read_bytes()
    digest = open_store(store).digest
    with record_run(store, "extract", engine="local") as run:
        on_disk = json.loads(run.path.read_text())
        assert on_disk["status"] == "running"  # written before any work
        assert on_disk["pid"] == os.getpid()
        run.update(counts={"new": 5, "failed": 1}, failed_by_reason={"empty file": 1}, generation=2)
        run.update(
            counts={"computed": 5}, stages={"model": {"seconds": 2.0, "images": 5, "images_per_s": 2.5}}
        )
    [record] = list_runs(store)
    validate(record)
    assert record["status"] == "ok" and record["exit_code"] == exitcodes.OK
    assert record["counts"] == {"new": 5, "failed": 1, "computed": 5}  # merged
    assert record["generation"] == 2 and record["seconds"] >= 0 and record["ended"]
    # Read from the manifest at the start: the store as the run found it.
    assert record["generation_before"] == 1 and record["bytes_added"] == 0
    assert record["fingerprint_digest"] == open_store(store).fingerprint.digest
    assert run.path.parent == store / RUNS and run.path.name == record["id"] + ".json"
    # History lives beside the manifest, never in it: same bytes, same digest, a clean verify.
    assert (store / "manifest.json").read_bytes() == manifest
    assert open_store(store).digest == digest
    assert verify_store(store) == ([], [])


@pytest.mark.parametrize(
    ("error", "status", "code", "line"),
    [
        (
            StoreError("/s: not a feature store (no manifest.json)"),
            "error",
            exitcodes.ERROR,
            "/s: not a feature",
        ),
        (LockedError("/s: another extract is writing (pid 7)"), "error", exitcodes.REFUSED, "/s: another"),
        (JobInterrupted(signal.SIGTERM), "interrupted", 143, "interrupted by SIGTERM"),
        (KeyboardInterrupt(), "interrupted", 130, "interrupted"),
        (
            RuntimeError("a bug\nover two lines"),
            "error",
            exitcodes.ERROR,
            "RuntimeError: a bug over two lines",
        ),
    ],
)
def test_how_a_run_ends_is_recorded_and_the_exception_still_raised(
    store: Path, error: BaseException, status: str, code: int, line: str
) -> None:
    with pytest.raises(type(error)), record_run(store, "extract"):
        raise error
    [record] = list_runs(store)
    validate(record)
    assert (record["status"], record["exit_code"]) == (status, code)
    assert record["error"].startswith(line) and "\n" not in record["error"]
    if status == "interrupted":
        assert record["signal"] == code - 128


def test_updates_are_written_at_most_every_checkpoint_interval(store: Path) -> None:
    clock = FakeClock()
    with record_run(store, "extract", checkpoint_seconds=60, clock=clock) as run:
        run.update(counts={"new": 1})
        assert json.loads(run.path.read_text())["counts"] == {}  # too soon
        clock.now += 61
        run.update(counts={"new": 2})
        assert json.loads(run.path.read_text())["counts"] == {"new": 2}
        clock.now += 10
    assert list_runs(store)[0]["seconds"] == pytest.approx(71)


def test_update_refuses_unknown_fields_and_copies_what_it_gets(store: Path) -> None:
    counts = {"new": np.int64(1)}  # numpy numbers are welcome, NaN is not JSON
    with record_run(store, "train") as run:
        with pytest.raises(TypeError, match="status"):
            run.update(status="ok")
        with pytest.raises(ValueError, match="JSON"):
            run.update(extra={"loss": float("nan")})
        run.update(counts=counts, extra={"model": "m"})
        counts["new"] = 99
    assert list_runs(store)[0]["counts"] == {"new": 1}
    with pytest.raises(ValueError, match="kind"):
        record_run(store, "nightly")


def test_a_run_never_creates_the_store_folder_itself(tmp_path: Path) -> None:
    typo = tmp_path / "stroes" / "pets"
    with pytest.raises(StoreError), record_run(typo, "train"):
        raise StoreError(f"{typo}: not a feature store (no manifest.json)")
    assert not typo.parent.exists()  # a mistyped path does not become a folder
    new = tmp_path / "new-store"
    with record_run(new, "extract") as run:
        assert not new.exists()
        new.mkdir()  # the job creates its store: from now on the record is written
        run.checkpoint()
        assert json.loads(run.path.read_text())["status"] == "running"
    assert [r["status"] for r in list_runs(new)] == ["ok"]


# A job that records a run, says so, and waits to be killed.
_WAITING_JOB = """
import sys, time
from featurestore.runs import record_run
with record_run(sys.argv[1], "extract") as run:
    run.update(counts={"new": 3})
    run.checkpoint()
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_is_reported_as_killed(store: Path, signum: int) -> None:
    job = subprocess.Popen(
        [sys.executable, "-c", _WAITING_JOB, str(store)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert job.stdout.readline().strip() == "ready"
        [alive] = list_runs(store)
        assert alive["status"] == "running"  # its process is still there
        job.send_signal(signum)
        job.wait(timeout=30)
    finally:
        job.kill()
        job.wait()
    [record] = list_runs(store)
    assert record["status"] == "killed" and record["counts"] == {"new": 3}
    validate(record)
    # The file keeps what the run last wrote: it is the evidence, readers decide.
    assert json.loads((store / RUNS / f"{record['id']}.json").read_text())["status"] == "running"


def test_a_reused_pid_or_another_host_are_told_apart(store: Path) -> None:
    with record_run(store, "extract") as run:
        pass
    record = json.loads(run.path.read_text())
    # Our own pid, alive, but started at another time: the pid was reused, the run is gone.
    reused = {**record, "status": "running", "pid_start": (record["pid_start"] or 0) + 12345}
    (store / RUNS / "20000101T000000.000000Z-1.json").write_text(json.dumps({**reused, "id": "a"}))
    # A dead pid on another host: this host cannot know, so it stays "running".
    elsewhere = {**record, "status": "running", "host": "another-host", "pid": 2**22 + 7}
    (store / RUNS / "20000101T000000.000000Z-2.json").write_text(json.dumps({**elsewhere, "id": "b"}))
    statuses = [r["status"] for r in list_runs(store)]
    assert statuses == ["killed", "running", "ok"]


def test_list_runs_orders_filters_and_survives_a_foreign_file(store: Path) -> None:
    for kind in ("extract", "train", "extract"):
        with record_run(store, kind):
            pass
    (store / RUNS / "20000101T000000.000000Z-3.json").write_text("{not json")
    (store / RUNS / "notes.txt").write_text("ignored: not a record name")
    runs = list_runs(store)
    assert [r["status"] for r in runs] == ["unreadable", "ok", "ok", "ok"]
    assert [r["kind"] for r in list_runs(store, kind="extract")] == ["extract", "extract"]
    assert [r["kind"] for r in list_runs(store, last=2)] == ["train", "extract"]
    assert last_success(store, "train")["kind"] == "train"
    table = format_runs(runs).splitlines()
    assert table[0].startswith("started (UTC)") and len(table) == 5
    assert "unreadable" in table[1] and table[3].split()[2:4] == ["train", "ok"]
    assert last_success(store, "finetune") is None
    assert list_runs(store.parent / "nowhere") == []


def test_failures_are_grouped_by_kind_of_reason() -> None:
    failures = {
        "a.jpg": "corrupt image data: broken data stream when reading image file",
        "b.jpg": "corrupt image data: image file is truncated",
        "c.jpg": "empty file (0 bytes)",
        "d.jpg": "cannot read file: permission denied",
    }
    assert failures_by_reason(failures) == {"corrupt image data": 2, "cannot read file": 1, "empty file": 1}
    assert reason_category("decompression bomb: 200000000 pixels > limit 89478485") == "decompression bomb"


def test_failure_totals_add_up_finished_extract_runs() -> None:
    records = [
        {"kind": "extract", "status": "ok", "counts": {"new": 90, "changed": 5, "retried": 5, "failed": 4}},
        {"kind": "extract", "status": "running", "counts": {"new": 1000, "failed": 1000}},
        {"kind": "train", "status": "ok", "counts": {"new": 7, "failed": 7}},
        {"kind": "extract", "status": "error", "counts": {"new": 10, "failed": 1}},
    ]
    assert failure_totals(records) == (5, 110)


def test_a_real_extract_summary_becomes_a_valid_record(tmp_path: Path) -> None:
    source = tmp_path / "images"
    for i in range(3):
        write_image(source / "cats" / f"{i}.jpg", seed=i)
        write_image(source / "dogs" / f"{i}.png", seed=10 + i)
    (source / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    store = tmp_path / "store"
    extractor = Extractor(weights="random", input_size=32, batch_size=4)
    with record_run(store, "extract") as run:
        summary = run_extract(
            ExtractConfig(source=source, store=store, input_size=32, batch_size=4, progress=False), extractor
        )
        run.update(**extract_fields(dataclasses.asdict(summary)), **store_fields(open_store(store)))
    [record] = list_runs(store)
    validate(record)
    assert record["generation_before"] is None and record["generation"] == open_store(store).generation
    assert record["bytes_added"] == store_bytes(store) > 0 and record["fingerprint_digest"]
    assert record["counts"]["new"] == 7 and record["counts"]["failed"] == 1
    assert record["counts"]["computed"] == 6
    assert sum(record["failed_by_reason"].values()) == 1
    assert record["stages"]["total"]["images"] == 6
    assert record["store"]["classes"] == {"cats": 3, "dogs": 3} and record["store"]["rows"] == 6
    # The summary's --json keys are the documented, stable ones.
    schema = json.loads((SCHEMAS / "extract-summary.schema.json").read_text())
    as_json = dataclasses.asdict(summary)
    jsonschema.validate(as_json, schema)
    fields = {f.name for f in dataclasses.fields(summary)}
    assert set(schema["required"]) <= fields  # the stable keys are all there
    assert fields <= set(schema["properties"])  # and every key is documented
    # The record never enters the store's data: it verifies clean.
    assert verify_store(store)[0] == []
