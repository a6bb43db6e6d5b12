"""Streaming training: the same model as in memory for pooled classifiers, a shuffled
PyDataset for Keras heads, the automatic choice and its one line."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import featurestore
from classifiers import streaming
from classifiers.cli import main
from classifiers.errors import TrainError
from classifiers.model_file import load_model
from classifiers.training import train_from_store
from featurestore.testing import make_store
from tests.classifiers.conftest import CLASS_NAMES, FAST_HEAD, make_maps


@pytest.fixture
def store_300(tmp_path: Path) -> Path:
    """300 labelled (2, 2, 8) maps plus 5 unlabeled, class-sorted like a folder walk."""
    X, y = make_maps(305, seed=3)
    order = np.argsort(y, kind="stable")
    X, y = X[order], y[order]
    y[:5] = -1  # unlabeled rows are left out by both paths
    splits = ["train"] * 200 + ["validation"] * 50 + ["test"] * 55
    path = tmp_path / "s300.store"
    make_store(path, X, y, CLASS_NAMES, splits=list(np.random.default_rng(0).permutation(splits)))
    return path


@pytest.fixture
def small_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read 16 rows at a time: many batches on a small store."""
    monkeypatch.setattr(streaming, "READ_ROWS", 16)


@pytest.mark.parametrize("features", ["max", "avg"])
def test_pooled_logreg_streamed_is_the_in_memory_model(
    store_300: Path, tmp_path: Path, small_reads: None, features: str
) -> None:
    lines: list[str] = []
    memory = train_from_store(store_300, "logreg", tmp_path / "memory", features=features, stream=False)
    streamed = train_from_store(
        store_300, "logreg", tmp_path / "streamed", features=features, stream=True, say=lines.append
    )
    assert memory.training["streamed"] is False and streamed.training["streamed"] is True
    assert len(lines) == 1 and lines[0].startswith("streaming the store") and "--stream" in lines[0]
    assert streamed.counts == memory.counts and sum(streamed.counts.values()) == 300
    assert streamed.metrics == memory.metrics  # same rows, same order, same fit
    a = load_model(memory.model_path).estimator
    b = load_model(streamed.model_path).estimator
    test = featurestore.open_store(store_300).load("test")
    assert np.array_equal(a.predict(test.features), b.predict(test.features))
    np.testing.assert_allclose(a.predict_proba(test.features), b.predict_proba(test.features), rtol=1e-6)
    np.testing.assert_array_equal(a[-1].coef_, b[-1].coef_)
    assert b["normalize"].copy is True and a["normalize"].get_params() == b["normalize"].get_params()


def test_store_batches_cover_every_row_once_per_epoch_in_a_new_order(
    tmp_path: Path, small_reads: None
) -> None:
    from classifiers.store_dataset import StoreBatches

    n = 333  # not a multiple of the block, window or batch size
    X = np.zeros((n, 2, 2, 3), dtype=np.float32)
    X[:, 0, 0, 0] = np.arange(n)  # each row names itself
    y = (np.arange(n) % 3 == 0).astype(np.int64)
    store = make_store(tmp_path / "ids.store", X, y, CLASS_NAMES, splits=["train"] * n)

    def epoch_rows(batches: StoreBatches) -> tuple[np.ndarray, list[int]]:
        rows, sizes = [], []
        for i in range(len(batches)):
            maps, codes = batches[i]
            ids = maps[:, 0, 0, 0].astype(int)
            assert np.array_equal(codes, y[ids])  # labels travel with their rows
            rows.append(ids)
            sizes.append(len(ids))
        batches.on_epoch_end()
        return np.concatenate(rows), sizes

    kwargs = {"batch_size": 10, "seed": 7, "block_rows": 8, "window_blocks": 4}
    with StoreBatches(store, [("train", False)], np.array([0, 1]), **kwargs) as batches:
        first, sizes = epoch_rows(batches)
        second, _ = epoch_rows(batches)
        folder = batches.folder
        assert folder.exists()
    assert not folder.exists()  # the temporary copy is removed
    for order in (first, second):
        assert np.array_equal(np.sort(order), np.arange(n))  # every row exactly once
    assert not np.array_equal(first, second)  # a new order each epoch
    assert not np.array_equal(first, np.arange(n))
    assert max(sizes) == 10 and sum(sizes) == n
    # The order is a function of the seed and the epoch alone.
    with StoreBatches(store, [("train", False)], np.array([0, 1]), **kwargs) as again:
        assert np.array_equal(epoch_rows(again)[0], first)
    # In store order when asked (validation).
    with StoreBatches(store, [("train", False)], np.array([0, 1]), **kwargs, shuffle=False) as ordered:
        in_store_order = store.load("train").features[:, 0, 0, 0].astype(int)  # cats/ then dogs/
        assert np.array_equal(epoch_rows(ordered)[0], in_store_order)
    # Rows far apart in the store share batches: the shuffle is not only local.
    spread = max(np.ptp(first[i : i + 10]) for i in range(0, n - 10, 10))
    assert spread > 4 * 8 * 2


def test_keras_head_trains_from_the_stream(store_300: Path, tmp_path: Path, small_reads: None) -> None:
    params = {**FAST_HEAD, "epochs": 4}
    report = train_from_store(store_300, "gap", tmp_path / "gap", params, stream=True)
    assert report.training["streamed"] is True and report.training["stream_copy_seconds"] > 0
    assert report.metrics["test"]["accuracy"] > 0.85  # the classes are far apart
    head = load_model(report.model_path).estimator
    assert len(head.history_["val_loss"]) == report.training["epochs_run"]
    assert head.input_shape_ == (2, 2, 8)
    test = featurestore.open_store(store_300).load("test")
    keep = test.labels >= 0
    accuracy = (head.predict(test.features[keep]) == test.labels[keep]).mean()
    assert accuracy == pytest.approx(report.metrics["test"]["accuracy"])


def test_the_choice_is_automatic_and_said_in_one_line(
    store_300: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needed = streaming.maps_bytes(
        featurestore.open_store(store_300), [("train", False), ("validation", False), ("test", False)]
    )
    assert needed == 305 * 2 * 2 * 8 * 4
    monkeypatch.setenv(streaming.MEMORY_ENV, str(3 * needed))  # fits: in memory, silently
    assert streaming.decide(needed, "maps", None).stream is False
    lines: list[str] = []
    report = train_from_store(store_300, "logreg", tmp_path / "a", say=lines.append)
    assert report.training["streamed"] is False and lines == []
    monkeypatch.setenv(streaming.MEMORY_ENV, str(needed))  # more than half: streams
    decision = streaming.decide(needed, "maps", None)
    assert decision.stream is True and "more than 50% of the" in decision.message
    result = CliRunner().invoke(main, ["train", str(store_300), "-c", "logreg", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "stream" in line]
    assert len(said) == 1 and said[0].startswith("streaming the store"), result.stderr
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["training"]["streamed"] is True
    assert streaming.decide(needed, "maps", False).stream is False  # --no-stream wins


def test_flattened_rows_that_do_not_fit_are_refused_in_one_line(
    store_300: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 195 train rows of 32 flattened values take 24 KiB; allow 20 KiB (half of 40 KiB).
    monkeypatch.setenv(streaming.MEMORY_ENV, "40K")
    with pytest.raises(TrainError) as caught:
        train_from_store(store_300, "logreg", tmp_path / "m", features="flatten", stream=True)
    message = str(caught.value)
    assert "\n" not in message and "flatten" in message and "--features max or avg" in message
    assert not (tmp_path / "m").exists()
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(store_300),
            "-c",
            "logreg",
            "--features",
            "flatten",
            "--stream",
            "-o",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 2  # the streaming line, then the reason


def test_memory_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert streaming.parse_bytes("2G") == 2 << 30 and streaming.parse_bytes("512") == 512
    monkeypatch.setenv(streaming.MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match=streaming.MEMORY_ENV):
        streaming.available_memory()
    monkeypatch.delenv(streaming.MEMORY_ENV)
    available, source = streaming.available_memory()
    assert available > 0 and source in ("MemAvailable", "RLIMIT_AS", "cgroup memory.max", "physical memory")


def test_the_choice_sees_an_address_space_limit(store_300: Path, tmp_path: Path) -> None:
    """A real limit (RLIMIT_AS) on a real `featurestore train` process: the choice sees the
    room left under it (the benchmark shows a store larger than the limit streaming)."""
    import subprocess
    import sys

    code = (
        "import resource, sys\n"
        "from classifiers.streaming import available_memory\n"
        "from classifiers.cli import main\n"
        "used = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + (600 << 20), resource.RLIM_INFINITY))\n"
        "print(available_memory(), file=sys.stderr)\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (streaming.MEMORY_ENV, "FEATURESTORE_STREAM")}
    store = featurestore.open_store(store_300)
    needed = streaming.maps_bytes(store, [("train", False), ("validation", False), ("test", False)])
    assert needed < 100_000  # far below the limit: it fits, in memory
    args = ["train", str(store_300), "-c", "logreg", "-o", str(tmp_path / "m")]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = ast.literal_eval(result.stderr.splitlines()[0])  # (bytes, source), as printed
    assert seen[1] == "RLIMIT_AS" and 500 << 20 < seen[0] <= 600 << 20
    assert "streaming" not in result.stderr  # 39 KB of maps fit in 600 MB


def test_bench_streamed_pools_while_reading_and_scores_the_same(
    store_300: Path, tmp_path: Path, small_reads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from classifiers.bench.config import BenchConfig
    from classifiers.bench.runner import run_benchmark

    def bench(out: str, **settings: object):
        config = BenchConfig(
            store=store_300,
            out=tmp_path / out,
            classifiers=("logreg", "knn"),
            folds=3,
            progress=False,
            **settings,
        )
        return run_benchmark(config)

    memory = bench("memory", stream=False)
    monkeypatch.setenv(streaming.MEMORY_ENV, "20K")  # the 39 KB of maps no longer fit
    streamed = bench("streamed")
    assert memory.store["streamed"] is None and streamed.store["streamed"] == "max"
    assert streamed.cells_reused == 0  # computed again, from pooled rows
    for a, b in zip(memory.rows, streamed.rows, strict=True):
        assert a.name == b.name
        assert [c["metrics"] for c in a.folds] == [c["metrics"] for c in b.folds]
        assert [c["key"] for c in a.folds] == [c["key"] for c in b.folds]  # the same cells
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(store_300),
            "--out",
            str(tmp_path / "cli"),
            "--classifiers",
            "logreg,dense",
            "--folds",
            "3",
        ],
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "every classifier must read one pooling" in result.stderr and "maps" in result.stderr
