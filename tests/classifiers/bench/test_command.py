"""The `bench` click command in-process, its one-line errors, and what it imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from classifiers.cli import main
from featurestore.testing import make_store
from tests.classifiers.bench.conftest import write_store
from tests.conftest import REPO_ROOT


def invoke(*args: str):
    return CliRunner().invoke(main, ["bench", *(str(a) for a in args)])


def test_command_runs_and_resumes_on_a_tiny_store(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [tiny_store, "--out", out, "--classifiers", "knn", "--grid", "logreg:C=0.01,1", "--folds", "3"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "classifier" in result.stdout and "logreg[C=0.01]" in result.stdout and "knn" in result.stdout
    assert "0 reused" in result.stderr and "12 cells" in result.stderr
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.png", "results.json"):
        assert (out / name).stat().st_size > 0 and str(out / name) in result.stdout
    again = invoke(*args)
    assert again.exit_code == 0 and "12 reused" in again.stderr and "0 to run" in again.stderr
    first_table = result.stdout.split("\n\n")[0]
    # Same figures from the cache; only the timing columns may differ, and they come from the cells too.
    assert again.stdout.split("\n\n")[0] == first_table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classifiers", "logreg,nope"], "unknown classifier 'nope'"),
        (["--grid", "logreg:C"], "is not of the form classifier:param=v1,v2"),
        (["--grid", "logreg:C=abc"], "C='abc': expected a number"),
        (["--folds", "40"], "--folds 40 needs at least 40 per class"),
        (["--grid-file", "missing.json"], "cannot read grid file"),
    ],
)
def test_bad_input_is_one_line(tiny_store: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke(tiny_store, "--out", tmp_path / "out", *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_out_of_range_options_are_usage_errors_naming_the_option(tiny_store: Path, tmp_path: Path) -> None:
    result = invoke(tiny_store, "--out", tmp_path / "out", "--folds", "1")
    assert result.exit_code == 2  # click's usage error, before any work
    assert "Invalid value for '--folds': 1 is not in the range x>=2" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_missing_and_one_class_stores_are_refused(tmp_path: Path) -> None:
    missing = invoke(tmp_path / "nowhere", "--out", tmp_path / "out")
    assert missing.exit_code == 1 and "not a feature store" in missing.output
    one = tmp_path / "one.store"
    make_store(one, np.ones((10, 1, 1, 4), np.float32), np.zeros(10, np.int64), ["only"])
    result = invoke(one, "--out", tmp_path / "out", "--classifiers", "knn")
    assert result.exit_code == 1 and "a benchmark needs 2" in result.output
    assert not (tmp_path / "out" / "results.json").exists()


def test_importing_the_command_stays_light() -> None:
    code = (
        "import sys, classifiers.cli, classifiers.bench\n"
        "print([m for m in ('sklearn', 'tensorflow', 'keras', 'matplotlib') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_parallel_run_matches_serial_and_keeps_tensorflow_in_the_workers(tmp_path: Path) -> None:
    """jobs=2 with a 2-epoch Keras head: the parent never imports TensorFlow; figures match jobs=1."""
    store = write_store(tmp_path / "s.store", n=60, shape=(1, 1, 512))
    code = f"""
import json, sys
from classifiers.bench import BenchConfig, run_benchmark
result = run_benchmark(BenchConfig(store={str(store)!r}, out={str(tmp_path / "par")!r}, classifiers=("knn",),
                       grid={{"gap": {{"epochs": ["2"]}}}}, folds=2, jobs=2, progress=False))
rows = {{r.name: [c["metrics"] for c in r.folds] for r in result.rows}}
print(json.dumps({{"tf": "tensorflow" in sys.modules, "rows": rows,
                   "threads": [c["threads"] for r in result.rows for c in r.folds]}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tf"] is False
    assert set(report["rows"]) == {"knn", "gap[epochs=2]"}
    assert all(t is not None and t >= 1 for t in report["threads"])  # workers were given a thread budget
    serial = invoke(store, "--out", tmp_path / "ser", "--classifiers", "knn", "--folds", "2")
    assert serial.exit_code == 0, serial.output
    results = json.loads((tmp_path / "ser" / "results.json").read_text())
    assert [c["metrics"] for c in results["leaderboard"][0]["folds"]] == report["rows"]["knn"]


@pytest.mark.parametrize(("how", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupt_exits_with_the_signal_code_and_one_line(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, code: int
) -> None:
    import os
    import signal
    import time

    from classifiers.bench import runner

    def interrupted(config: object) -> None:
        if how == "SIGINT":
            raise KeyboardInterrupt  # what Ctrl-C raises
        os.kill(os.getpid(), signal.SIGTERM)  # the job's handler turns it into KeyboardInterrupt
        time.sleep(5)
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(runner, "_run", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    result = invoke(tiny_store, "--out", out, "--classifiers", "knn")
    assert result.exit_code == code
    assert result.stderr.strip().splitlines() == [
        f"Error: interrupted by {how}; finished cells are kept in {out / 'cells'}; run again to resume"
    ]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
