"""`featurestore train` and `featurestore predict`, in-process with CliRunner."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_feature_mode_choices_match_the_transform() -> None:
    from classifiers import cli
    from classifiers.transforms import FEATURE_MODES

    assert cli.FEATURE_MODES == FEATURE_MODES


def test_defaults_come_from_the_config_dataclasses() -> None:
    from classifiers.bench.config import BenchConfig
    from classifiers.finetune.config import FinetuneConfig, FinetuneCVConfig
    from featurestore.extract_config import ExtractConfig

    params = {
        (command.name, p.name): p.default
        for command in main.commands.values()
        for p in getattr(command, "params", [])
    }
    assert params[("extract", "workers")] == ExtractConfig(source=Path("s"), store=Path("t")).workers
    assert params[("extract", "batch_size")] == ExtractConfig(source=Path("s"), store=Path("t")).batch_size
    assert params[("bench", "folds")] == BenchConfig(store=Path("s"), out=Path("o")).folds
    finetune = FinetuneConfig(store=Path("s"), head=Path("h"), out=Path("o"))
    assert params[("finetune", "epochs")] == finetune.epochs
    assert params[("finetune", "workers")] == finetune.workers
    finetune_cv = FinetuneCVConfig(store=Path("s"), out=Path("o"))
    assert params[("finetune-cv", "epochs")] == finetune_cv.epochs != finetune.epochs
    assert params[("finetune-cv", "patience")] == finetune_cv.patience != finetune.patience
    # the same option, each command's own default: images for finetune, the cache for finetune-cv
    assert params[("finetune-cv", "from_cache")] == finetune_cv.from_cache != finetune.from_cache


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--splits", "nan,0.5,0.5", "--splits"),
        ("--splits", "0.7,0.2", "--splits"),
        ("--input-size", "100000", "'--input-size': 100000 is not in the range 32<=x<=1024"),
        ("--batch-size", "0", "'--batch-size': 0 is not in the range 1<=x<=4096"),
        ("--batch-size", "-4", "'--batch-size': -4 is not in the range 1<=x<=4096"),
        ("--commit-every", "0", "'--commit-every': 0 is not in the range 1<=x<=65536"),
        ("--commit-every", "-3", "'--commit-every': -3 is not in the range 1<=x<=65536"),
        ("--workers", "0", "'--workers': 0 is not in the range 1<=x<=256"),
        ("--dtype", "float64", "'--dtype'"),
    ],
)
def test_extract_options_are_validated_before_any_work(
    tiny_tree: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    store = tmp_path / "store"
    result = run("extract", tiny_tree, "--store", store, "--weights", "random", option, value)
    assert result.exit_code == 2, result.output  # click's usage error
    assert message in result.output and "Traceback" not in result.output
    assert not store.exists()  # refused before the lock, the discovery or the model


def test_one_command_group_serves_every_command() -> None:
    names = set(main.commands)
    assert {"extract", "info", "verify", "export", "demo", "weights", "train", "predict"} <= names
    assert {"bench", "finetune", "finetune-cv"} <= names
    result = subprocess.run(
        [sys.executable, "-m", "classifiers.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert all(name in result.stdout for name in names)


def test_tensorflow_start_up_lines_are_filtered_once(tiny_tree: Path, tmp_path: Path) -> None:
    """A command that imports TensorFlow prints no oneDNN/CUDA/absl start-up lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "classifiers.cli", "extract", str(tiny_tree), "--store"]
    command += [str(tmp_path / "s"), "--weights", "random", "--input-size", "32"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers"):
        assert noise not in result.stderr, result.stderr
