"""The retrain gate through real `train` processes: a worse model is refused with exit 7."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families

from classifiers.gate_models import gate_models
from featurestore import exitcodes
from featurestore.runs import list_runs
from featurestore.testing import make_store
from tests.classifiers.conftest import CLASS_NAMES, make_maps
from tests.conftest import REPO_ROOT

#: logreg with almost no freedom: the intercept alone, one class for every row.
USELESS = ("--param", "C=1e-9")


def train(store: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "classifiers.cli", "train", str(store), "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 rows whose first channels carry the class: a good model is near 100% on test."""
    path = tmp_path_factory.mktemp("gate") / "store"
    X, y = make_maps(240, seed=3)
    make_store(path, X, y, CLASS_NAMES)
    return path


@pytest.fixture(scope="module")
def baseline(store: Path) -> Path:
    out = store.parent / "baseline"
    result = train(store, out, "--classifier", "logreg")
    assert result.returncode == 0, result.stderr
    return out


def test_a_worse_model_is_refused_and_a_good_one_promoted(
    store: Path, baseline: Path, tmp_path: Path
) -> None:
    prom = tmp_path / "train.prom"
    worse = train(
        store, tmp_path / "worse", "--classifier", "logreg", *USELESS, "--baseline", str(baseline), "--json"
    )
    assert worse.returncode == exitcodes.GATE_FAILED, worse.stderr
    assert "gate: REFUSED: significantly worse than the baseline" in worse.stdout
    gate = json.loads(worse.stdout.strip().splitlines()[-1])["gate"]
    assert not gate["promote"] and gate["p_worse"] < 0.05 and gate["only_baseline_right"] > 0
    assert gate["baseline_accuracy"] > gate["new_accuracy"]
    assert gate["n"] == json.loads(worse.stdout.strip().splitlines()[-1])["counts"]["test"]
    assert (tmp_path / "worse" / "metadata.json").is_file()  # kept as a candidate, not promoted

    better = train(
        store,
        tmp_path / "again",
        "--classifier",
        "logreg",
        "--baseline",
        str(baseline),
        "--min-accuracy",
        "0.8",
        "--metrics-file",
        str(prom),
    )
    assert better.returncode == exitcodes.OK, better.stdout + better.stderr
    assert "gate: promote: not significantly worse than the baseline" in better.stdout

    # Every train run left a record; the refused one says why, the metrics file the outcome.
    records = list_runs(store, kind="train")
    schema = json.loads((REPO_ROOT / "docs" / "schemas" / "run-record.schema.json").read_text())
    for record in records:
        jsonschema.validate(record, schema)
    assert [(r["status"], r["exit_code"]) for r in records] == [("ok", 0), ("ok", 7), ("ok", 0)]
    assert records[1]["extra"]["gate"]["promote"] is False
    assert records[1]["extra"]["model"] == str(tmp_path / "worse")
    assert records[2]["counts"]["train_rows"] > 0 and records[2]["stages"]["fit"]["seconds"] > 0
    codes = [
        s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
        if s.name == "featurestore_run_exit_code"
    ]
    assert codes == [0.0]


def test_the_accuracy_floor_alone(store: Path, tmp_path: Path) -> None:
    below = train(store, tmp_path / "m", "--classifier", "logreg", *USELESS, "--min-accuracy", "0.9")
    assert below.returncode == exitcodes.GATE_FAILED
    assert "gate: REFUSED: accuracy" in below.stdout and "below the floor 0.9000" in below.stdout
    missing = train(store, tmp_path / "n", "--classifier", "logreg", "--baseline", str(tmp_path / "none"))
    assert missing.returncode == exitcodes.ERROR and "Traceback" not in missing.stderr
    assert not (tmp_path / "n").exists()  # refused before any training


def test_gate_models_pairs_the_same_test_rows(store: Path, baseline: Path) -> None:
    decision = gate_models(store, baseline, baseline)  # a model against itself: no discordant row
    assert decision.promote and decision.only_new_right == decision.only_baseline_right == 0
    assert decision.new_accuracy == decision.baseline_accuracy > 0.8
