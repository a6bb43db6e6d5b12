"""run_benchmark on tiny stores: identical folds, reproducible figures, resumable cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from classifiers.bench import runner
from classifiers.bench.config import BenchConfig
from classifiers.bench.folds import load_data, make_folds
from classifiers.bench.leaderboard import BenchResult
from classifiers.bench.report import format_table
from featurestore.errors import JobInterrupted
from tests.classifiers.bench.conftest import CHEAP, SMALL_FOREST


def run(store: Path, out: Path, **kwargs: Any) -> BenchResult:
    settings: dict[str, Any] = {"classifiers": CHEAP, "folds": 3, "progress": False} | kwargs
    return runner.run_benchmark(BenchConfig(store=store, out=out, **settings))


def fold_digests(result: BenchResult) -> dict[str, list[str]]:
    return {row.name: [cell["key"]["fold_digest"] for cell in row.folds] for row in result.rows}


def fold_figures(result: BenchResult) -> dict[str, list[dict]]:
    return {row.name: [cell["metrics"] for cell in row.folds] for row in result.rows}


@pytest.fixture(scope="module")
def first(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> BenchResult:
    """One run shared by the read-only tests: logreg, knn and a 5-tree forest, 3 folds."""
    return run(tiny_store, tmp_path_factory.mktemp("first"), grid=SMALL_FOREST)


def test_every_classifier_gets_the_same_folds(first: BenchResult, tiny_store: Path, tmp_path: Path) -> None:
    digests = fold_digests(first)
    assert len(digests) == 3 and len({tuple(d) for d in digests.values()}) == 1
    data = load_data(tiny_store, folds=3)
    expected = [f.digest for f in make_folds(data.y, data.ids, 3, 1, seed=0)]
    assert next(iter(digests.values())) == expected
    for row in first.rows:  # the test sizes agree too, fold by fold
        assert [c["n_test"] for c in row.folds] == [f["n_test"] for f in first.folds]
    alone = run(tiny_store, tmp_path / "alone", classifiers=("knn",))  # another selection, same folds
    assert fold_digests(alone)["knn"] == expected


def test_same_seed_same_table(first: BenchResult, tiny_store: Path, tmp_path: Path) -> None:
    again = run(tiny_store, tmp_path / "again", grid=SMALL_FOREST)
    assert again.cells_reused == 0  # a fresh folder: everything recomputed
    assert fold_figures(again) == fold_figures(first)
    assert [r.name for r in again.rows] == [r.name for r in first.rows]
    assert [r.comparison for r in again.rows] == [r.comparison for r in first.rows]
    other_seed = run(tiny_store, tmp_path / "seed1", classifiers=("knn",), seed=1)
    assert fold_digests(other_seed)["knn"] != fold_digests(first)["knn"]


def test_leaderboard_is_ranked_and_compared_with_the_best(first: BenchResult) -> None:
    means = [row.summaries["accuracy"].mean for row in first.rows]
    assert means == sorted(means, reverse=True) and [r.rank for r in first.rows] == [1, 2, 3]
    best, *others = first.rows
    assert best.comparison is None and best.verdict == "best"
    for row in others:
        assert 0.0 <= row.comparison.p_value <= 1.0
        assert row.verdict == ("tied with best" if row.comparison.p_value >= 0.05 else "worse than best")
        assert row.comparison.mean_difference <= 0.0
    for row in first.rows:
        assert (
            row.test is not None and row.test["n_train"] == first.store["pool_rows"]
        )  # final fit on all of it
        assert row.model_bytes > 0 and row.fit_seconds > 0 and row.predict_seconds_per_1000 > 0
        acc = row.summaries["accuracy"]
        assert acc.low <= acc.mean <= acc.high <= 1.0
    assert "random-forest[n_estimators=5]" in format_table(first)


def test_outputs_exist_and_parse(first: BenchResult) -> None:
    import csv

    out = first.config.out
    with open(out / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == [r.name for r in first.rows]
    assert float(rows[0]["accuracy_mean"]) == pytest.approx(first.rows[0].summaries["accuracy"].mean)
    assert rows[0]["store_digest"] == first.store["digest"] and rows[0]["package_version"]
    markdown = (out / "leaderboard.md").read_text()
    assert "| # | classifier |" in markdown and first.store["fingerprint_digest"][:16] in markdown
    results = json.loads((out / "results.json").read_text())
    assert results["store"]["digest"] == first.store["digest"]
    assert results["store"]["fingerprint"]["weights_sha256"] == "0" * 64
    assert results["versions"]["featurestore"] and results["config"]["folds"] == 3
    for row in results["leaderboard"]:
        assert len(row["folds"]) == 3 and set(row["folds"][0]["metrics"]) >= {
            "accuracy",
            "roc_auc",
            "log_loss",
        }
    png = (out / "leaderboard.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000
    from matplotlib.image import imread

    assert imread(out / "leaderboard.png").shape[0] > 100


def test_resume_skips_finished_cells_and_recomputes_missing_ones(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    first = run(tiny_store, out)
    assert (first.cells_total, first.cells_reused) == (8, 0)  # 2 classifiers x (3 folds + test)
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 8
    stamps = {path: path.stat().st_mtime_ns for path in cells}
    second = run(tiny_store, out)
    assert (second.cells_reused, second.cells_computed) == (8, 0)
    assert {path: path.stat().st_mtime_ns for path in cells} == stamps
    assert fold_figures(second) == fold_figures(first)
    cells[0].unlink()
    cells[1].write_text('{"half": ')  # a damaged file is recomputed, never trusted
    third = run(tiny_store, out)
    assert (third.cells_reused, third.cells_computed) == (6, 2)
    assert json.loads(cells[0].read_text())["metrics"] and json.loads(cells[1].read_text())["metrics"]
    changed = run(tiny_store, out, classifiers=("knn",), grid={"logreg": {"C": ["0.5"]}})
    assert changed.cells_reused == 4  # knn's cells; logreg with another C is another cell


def test_interrupted_run_resumes(tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = runner.run_cell

    def interrupted_after_three(*args: Any, **kwargs: Any) -> dict:
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    out = tmp_path / "interrupted"
    monkeypatch.setattr(runner, "run_cell", interrupted_after_three)
    with pytest.raises(JobInterrupted, match="finished cells are kept") as stopped:
        run(tiny_store, out)
    assert stopped.value.exit_code == 130  # SIGINT: what Ctrl-C sends
    assert len(list((out / "cells").glob("*.json"))) == 3
    monkeypatch.setattr(runner, "run_cell", real)
    resumed = run(tiny_store, out)
    assert (resumed.cells_reused, resumed.cells_computed) == (3, 5)
    assert not list(out.rglob("*.tmp"))


def test_grid_rows_are_marked_as_selected_on_their_folds(tiny_store: Path, tmp_path: Path) -> None:
    result = run(tiny_store, tmp_path / "grid", classifiers=(), grid={"logreg": {"C": ["0.001", "1"]}})
    notes = {row.name: row.note for row in result.rows}
    assert set(notes) == {"logreg[C=0.001]", "logreg[C=1]"}
    winner = result.rows[0].name
    assert "selected on these folds" in notes[winner]
    assert [n for name, n in notes.items() if name != winner] == ["grid of 2"]
    assert f"{winner} *" in format_table(result)
    params = {row.name: row.params["C"] for row in result.rows}
    assert params == {"logreg[C=0.001]": 0.001, "logreg[C=1]": 1.0}


def test_progress_bar_goes_to_stderr(tiny_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run(tiny_store, tmp_path / "bar", classifiers=("knn",), progress=True)
    captured = capsys.readouterr()
    assert "4/4" in captured.err and "cell" in captured.err and "4 cells, 0 reused" in captured.err
    assert captured.out == ""


def test_fit_warnings_are_kept_per_cell_and_named_in_the_table(tiny_store: Path, tmp_path: Path) -> None:
    result = run(tiny_store, tmp_path / "warn", classifiers=(), grid={"logreg": {"max_iter": ["1"]}})
    (row,) = result.rows
    assert all(any("ConvergenceWarning" in w for w in cell["warnings"]) for cell in row.folds)
    assert "warnings while fitting" in format_table(result) and "ConvergenceWarning" in format_table(result)


def test_a_new_run_removes_the_temporary_files_of_dead_runs_only(tiny_store: Path, tmp_path: Path) -> None:
    import os
    import subprocess

    out = tmp_path / "temps"
    (out / "cells").mkdir(parents=True)
    process = subprocess.Popen(["true"])
    process.wait()  # a pid that no longer runs
    dead = [
        out / f".results.json.{process.pid}.0123abcd.tmp",
        out / "cells" / f".x.json.{process.pid}.4567cdef.tmp",
    ]
    live = out / "cells" / f".y.json.{os.getppid()}.89abcdef.tmp"  # a live process's write
    for path in [*dead, live]:
        path.write_text("{")
    run(tiny_store, out, classifiers=("knn",))
    assert not any(path.exists() for path in dead)
    assert live.exists()
