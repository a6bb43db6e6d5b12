"""`featurestore train` and `featurestore predict`, in-process with CliRunner."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from classifiers.cli import main


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_prints_metrics_and_json_last(tiny_store: Path, tmp_path: Path) -> None:
    result = run(
        "train", tiny_store, "--classifier", "logreg", "--out", tmp_path / "m", "--param", "C=0.1", "--json"
    )
    assert result.exit_code == 0, result.output
    assert "[validation]" in result.output and "[test]" in result.output
    assert "true/pred" in result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["params"]["C"] == 0.1
    assert set(report["metrics"]["test"]) >= {"accuracy", "balanced_accuracy", "f1", "roc_auc"}
    assert (tmp_path / "m" / "metadata.json").is_file()


def test_train_reads_a_config_and_options_win(tiny_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('classifier = "knn"\nfeatures = "max"\n[params]\nn_neighbors = 3\n')
    result = run(
        "train", tiny_store, "--config", config, "--out", tmp_path / "m", "-p", "n_neighbors=5", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["classifier"], report["features"]) == ("knn", "max")
    assert report["params"]["n_neighbors"] == 5


def test_errors_are_one_line_without_traceback(tiny_store: Path, tmp_path: Path) -> None:
    cases = [
        (["--classifier", "logreg", "--param", "C=abc"], "parameter C='abc': expected a number"),
        (["--classifier", "svm"], "unknown classifier 'svm'"),
        ([], "no classifier"),
    ]
    for extra, message in cases:
        result = run("train", tiny_store, "--out", tmp_path / "m", *extra)
        assert result.exit_code == 1
        assert result.output.startswith("Error: ")
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "metadata.json").write_text("{")
    result = run("predict", tmp_path / "fake", tiny_store, "--out", tmp_path / "p.csv")
    assert result.exit_code == 1 and "not JSON" in result.output


def test_predict_writes_the_csv(tiny_store: Path, tmp_path: Path) -> None:
    assert run("train", tiny_store, "-c", "logreg", "-o", tmp_path / "m").exit_code == 0
    result = run("predict", tmp_path / "m", tiny_store, "--out", tmp_path / "p.csv", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["rows"] == 60 and summary["errors"] == 0 and summary["accuracy"] > 0.9
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 60 and set(rows[0]) >= {"path", "predicted", "probability", "p_cats"}


def test_help_lists_the_commands_without_importing_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from classifiers.cli import main\n"
        "out = CliRunner().invoke(main, ['--help']).output\n"
        "assert 'train' in out and 'predict' in out and 'extract' in out, out\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
