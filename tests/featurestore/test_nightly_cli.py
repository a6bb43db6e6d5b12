"""The nightly extract as a scheduler runs it: real `python -m classifiers.cli` processes.

Run records after normal, failed, refused, interrupted and killed runs; progress lines in a
log; the `--json` summary against its schema; every exit code; the metrics file; `runs` and
`report`. Tiny images through a randomly initialised VGG16 at 32 x 32: seconds per process.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from featurestore import exitcodes
from featurestore.lock import store_lock
from featurestore.runs import RUNS, list_runs
from featurestore.store import open_store
from tests.conftest import REPO_ROOT, extract_argv, write_image

SCHEMAS = REPO_ROOT / "docs" / "schemas"
SIZE = 32
PROGRESS_LINE = re.compile(r"^extract: \d+/\d+ \(\d+\.\d%\), \d+\.\d images/s(, ETA \S+)?, \d+ failed$")
FINAL_LINE = re.compile(r"^extract: (\d+)/(\d+) in \S+ \(\d+\.\d images/s\), (\d+) failed$")


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def command(source: Path, store: Path, *options: str) -> list[str]:
    return extract_argv(source, store, *options, size=SIZE)


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "classifiers.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


def extract(source: Path, store: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(source, store, *options), capture_output=True, text=True, timeout=300)


def noise_tree(root: Path, n: int, seed: int = 0) -> Path:
    """`n` random-noise images, alternating between two classes."""
    for i in range(n):
        write_image(root / ("cats" if i % 2 else "dogs") / f"n{seed}_{i:03d}.png", seed=seed * 1000 + i)
    return root


def smooth_images(root: Path, n: int) -> None:
    """`n` smooth gradient images: another kind of picture than the noise."""
    ramp = np.linspace(0, 255, 40, dtype=np.float32)
    for i in range(n):
        pixels = np.stack([np.add.outer(np.full(32, 10.0 * i), ramp)] * 3, axis=-1) % 256
        path = root / ("cats" if i % 2 else "dogs") / f"smooth_{i:03d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_run_logs_progress_records_itself_and_writes_its_metrics(tmp_path: Path) -> None:
    source = noise_tree(tmp_path / "images", 12)
    (source / "cats" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    store, prom = tmp_path / "store", tmp_path / "textfile" / "fs.prom"
    prom.parent.mkdir()
    result = extract(source, store, "--json", "--progress-every", "0.001", "--metrics-file", str(prom))
    # A failed image is reported, not an error: exit 0 without --strict.
    assert result.returncode == exitcodes.OK, result.stderr
    # stderr is a pipe, not a terminal: plain progress lines, no bar, one final line.
    lines = [line for line in result.stderr.splitlines() if line.startswith("extract: ")]
    assert lines[0] == "extract: 13 images to process"
    assert len(lines) >= 3 and all(PROGRESS_LINE.match(line) for line in lines[1:-1]), lines
    final = FINAL_LINE.match(lines[-1])
    assert final and final.groups() == ("13", "13", "1"), lines[-1]
    assert "\r" not in result.stderr  # no bar redrawn in the log
    summary = last_json(result.stdout)
    jsonschema.validate(summary, schema("extract-summary"))
    assert set(schema("extract-summary")["required"]) <= set(summary)
    assert (summary["new"], summary["failed"], summary["computed"]) == (13, 1, 12)
    assert summary["exit_code"] == 0 and summary["drift"] is None  # a first night: nothing earlier
    for name, images in (("decode", 13), ("model", 12), ("write", 12), ("total", 12)):
        assert summary["stages"][name]["images"] == images and summary["stages"][name]["seconds"] > 0
    [record] = list_runs(store)
    jsonschema.validate(record, schema("run-record"), format_checker=jsonschema.FormatChecker())
    assert record["id"] == summary["run"] and record["status"] == "ok" and record["exit_code"] == 0
    assert record["counts"]["failed"] == 1 and record["failed_by_reason"] == {"not an image": 1}
    assert record["generation"] == open_store(store).generation and record["bytes_added"] > 0
    assert record["stages"]["model"]["images"] == 12 and record["store"]["rows"] == 12
    assert record["argv"][1:3] == ["extract", str(source)]
    # The textfile node_exporter reads: parsed by Prometheus' own client library.
    samples = {
        (s.name, s.labels.get("status") or s.labels.get("outcome") or s.labels.get("stage")): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    assert samples[("featurestore_run_status", "ok")] == 1.0
    assert samples[("featurestore_run_images", "computed")] == 12.0
    assert samples[("featurestore_run_stage_images_per_second", "model")] > 0
    assert samples[("featurestore_store_images", None)] == 12.0
    assert list(prom.parent.iterdir()) == [prom]  # written atomically: no temporary file left

    # Tonight again, with --strict: the broken image is retried, fails again: exit 3, recorded.
    strict = extract(source, store, "--json", "--strict")
    assert strict.returncode == exitcodes.FAILED_IMAGES, strict.stderr
    assert last_json(strict.stdout)["exit_code"] == exitcodes.FAILED_IMAGES
    assert [r["exit_code"] for r in list_runs(store)] == [0, exitcodes.FAILED_IMAGES]
    assert list_runs(store)[-1]["status"] == "ok"  # the work is committed: the run itself ended ok

    # `featurestore runs`: a table for people, the records as JSON for programs.
    table = cli("runs", store)
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 3
    assert table.stdout.splitlines()[1].split()[2:4] == ["extract", "ok"]
    last = cli("runs", store, "--json", "--last", "1")
    assert [r["id"] for r in json.loads(last.stdout)] == [list_runs(store)[-1]["id"]]
    missing = cli("runs", tmp_path / "nowhere")
    assert missing.returncode == exitcodes.ERROR and "not a feature store" in missing.stderr


def test_refused_runs_exit_5_and_change_nothing(tmp_path: Path) -> None:
    source = noise_tree(tmp_path / "images", 6)
    store = tmp_path / "store"
    assert extract(source, store).returncode == 0
    manifest = (store / "manifest.json").read_bytes()
    # Another writer holds the store.
    with store_lock(store):
        busy = extract(source, store, "--json")
    assert busy.returncode == exitcodes.REFUSED
    assert "another extract is writing to this store" in busy.stderr and "Traceback" not in busy.stderr
    # The store was built with other settings.
    other = extract(source, store, "--input-size", "48")
    assert other.returncode == exitcodes.REFUSED
    assert "store was built with other settings" in other.stderr and "--rebuild" in other.stderr
    assert (store / "manifest.json").read_bytes() == manifest
    records = list_runs(store)
    assert [(r["status"], r["exit_code"]) for r in records] == [("ok", 0), ("error", 5), ("error", 5)]
    assert "another extract" in records[1]["error"] and "other settings" in records[2]["error"]


def test_bad_input_exits_6_with_one_line(tmp_path: Path) -> None:
    missing = extract(tmp_path / "missing", tmp_path / "store")
    assert missing.returncode == exitcodes.BAD_INPUT
    assert missing.stderr.strip().splitlines() == [f"Error: {tmp_path / 'missing'}: does not exist"]
    assert not (tmp_path / "store").exists()
    prom = extract(noise_tree(tmp_path / "images", 2), tmp_path / "store", "--metrics-file", "x.txt")
    assert prom.returncode == exitcodes.BAD_INPUT and "only *.prom files" in prom.stderr
    usage = extract(tmp_path, tmp_path / "store", "--fail-on-drift", "0.2")
    assert usage.returncode == exitcodes.USAGE and "--fail-on-drift" in usage.stderr


def wait_for_commit(store: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any((store / "pieces").glob("*.h5")):
        assert process.poll() is None, "extract ended before its first commit"
        assert time.monotonic() < deadline, "no commit in time"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("signum", "code", "status"),
    [
        (signal.SIGTERM, exitcodes.INTERRUPTED_SIGTERM, "interrupted"),
        (signal.SIGINT, exitcodes.INTERRUPTED_SIGINT, "interrupted"),
        (signal.SIGKILL, -signal.SIGKILL, "killed"),
    ],
)
def test_a_stopped_run_says_how_it_ended(tmp_path: Path, signum: int, code: int, status: str) -> None:
    source = noise_tree(tmp_path / "images", 48)
    store = tmp_path / "store"
    process = subprocess.Popen(
        command(source, store, "--commit-every", "4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_commit(store, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    [record] = list_runs(store)
    jsonschema.validate(record, schema("run-record"))
    assert record["status"] == status
    if status == "interrupted":
        assert record["exit_code"] == code and record["signal"] == signum
        assert f"interrupted by {signal.Signals(signum).name}" in record["error"]
        assert record["generation"] == open_store(store).generation  # what it committed
        assert record["ended"] and record["bytes_added"] > 0
        # What it did before stopping: committed rows went through the model (only those are
        # counted: the planned rest is tomorrow's "new").
        assert 4 <= record["counts"]["computed"] < 48 and "new" not in record["counts"]
        assert record["stages"]["model"]["images"] == record["counts"]["computed"]
    else:  # SIGKILL: no chance to finish the record; the file still says "running"
        assert json.loads((store / RUNS / f"{record['id']}.json").read_text())["status"] == "running"
    # The next night resumes, and the history keeps both.
    assert extract(source, store).returncode == 0
    assert [r["status"] for r in list_runs(store)] == [status, "ok"]
    assert len(open_store(store)) == 48
    shown = cli("runs", store).stdout.splitlines()
    assert status in shown[1] and " ok " in shown[2]


def test_drift_is_recorded_and_fails_the_run_only_when_asked(tmp_path: Path) -> None:
    source = noise_tree(tmp_path / "images", 40)
    store = tmp_path / "store"
    assert extract(source, store).returncode == 0
    # A night like the earlier ones: checked, recorded, quiet: exit 0 even with --fail-on-drift.
    noise_tree(source, 20, seed=1)
    same = extract(source, store, "--json", "--fail-on-drift", "0.7")
    assert same.returncode == exitcodes.OK, same.stdout + same.stderr
    drift = last_json(same.stdout)["drift"]
    assert drift["overall"]["n_tonight"] == 20 and not drift["drifted"] and drift["threshold"] == 0.7
    assert "drift (threshold AUC 0.7): no drift" in same.stdout
    # Another kind of picture tonight, judged on two copies of the store.
    smooth_images(source, 20)
    copy = tmp_path / "copy"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".lock"))
    recorded = extract(source, store, "--json")  # no --fail-on-drift: flagged, recorded, exit 0
    assert recorded.returncode == exitcodes.OK, recorded.stderr
    assert last_json(recorded.stdout)["drift"]["drifted"]
    failing = extract(source, copy, "--json", "--fail-on-drift", "0.7")
    assert failing.returncode == exitcodes.DRIFT, failing.stdout + failing.stderr
    summary = last_json(failing.stdout)
    assert summary["exit_code"] == exitcodes.DRIFT and summary["drift"]["overall"]["auc"] >= 0.7
    assert "drift (threshold AUC 0.7): DRIFT" in failing.stdout
    assert len(open_store(copy)) == 80  # drifted or not, tonight's rows are committed
    records = list_runs(copy)
    assert [(r["status"], r["exit_code"]) for r in records] == [("ok", 0), ("ok", 0), ("ok", 4)]
    assert [r["drift"] is None for r in records] == [True, False, False]
    assert records[-1]["drift"] == summary["drift"]
    jsonschema.validate(records[-1], schema("run-record"))
    no_check = extract(source, store, "--json", "--no-drift")  # nothing new: nothing to check anyway
    assert last_json(no_check.stdout)["drift"] is None and no_check.returncode == 0


def test_report_command_writes_the_page(tmp_path: Path) -> None:
    source = noise_tree(tmp_path / "images", 6)
    store = tmp_path / "store"
    assert extract(source, store).returncode == 0
    result = cli("report", store, "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert result.stdout.strip() == f"wrote {tmp_path / 'report' / 'index.html'}"
    assert "<h2>Last runs</h2>" in page and "Images per night" in page
    bad = cli("report", store, "--out", tmp_path / "r2", "--model", tmp_path / "no-model")
    assert bad.returncode == exitcodes.ERROR and "not a model folder" in bad.stderr


def test_run_kind_choices_match_the_history_and_help_stays_light() -> None:
    from classifiers import cli
    from featurestore.runs import KINDS

    assert cli.RUN_KINDS == KINDS
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from classifiers.cli import main\n"
        "for command in ('runs', 'report', 'extract', 'train'):\n"
        "    out = CliRunner().invoke(main, [command, '--help']).output\n"
        "    assert 'Usage:' in out, out\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'sklearn', 'numpy', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
