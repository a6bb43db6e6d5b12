"""Real extract processes killed with SIGKILL and SIGTERM, then resumed; a second writer refused."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from featurestore import exitcodes
from featurestore.lock import store_lock
from featurestore.store import open_store
from featurestore.verify import verify_store
from tests.conftest import extract_argv, wait_for_commit, write_image

SIZE = 32


def extract_command(source: Path, store: Path) -> list[str]:
    return extract_argv(source, store, "--commit-every", "4", size=SIZE)


def run_until_done(source: Path, store: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(extract_command(source, store), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash") / "images"
    for i in range(48):
        write_image(root / ("cats" if i % 2 else "dogs") / f"{i:03d}.png", seed=i, size=(64, 48))
    return root


@pytest.fixture(scope="module")
def reference(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Features from one uninterrupted run."""
    store = tmp_path_factory.mktemp("reference") / "s"
    run_until_done(tree, store)
    data = open_store(store).load()
    return dict(zip(data.paths, data.features, strict=True))


def test_sigkill_at_random_points_then_resume_is_bit_identical(
    tree: Path, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    store = tmp_path / "s"
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(extract_command(tree, store), stderr=subprocess.PIPE, text=True)
        if (store / "manifest.json").exists():
            time.sleep(rng.uniform(0.0, 3.0))  # TensorFlow start-up, decode, model or commit
        else:
            wait_for_commit(store, process)
            time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert open_store(store) is not None  # the store opens after every kill
        assert verify_store(store)[0] == []
    assert kills >= 1
    run_until_done(tree, store)
    data = open_store(store).load()
    assert sorted(data.paths) == sorted(reference)  # every image exactly once
    assert len(set(data.ids)) == len(data.ids) == len(reference)
    for path, features in zip(data.paths, data.features, strict=True):
        np.testing.assert_array_equal(features, reference[path])  # bit-identical
    findings, notes = verify_store(store)
    assert findings == [] and notes == []  # leftovers of the kills were cleaned up


def test_sigterm_commits_finished_work_and_exits_non_zero(
    tree: Path, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    store = tmp_path / "s"
    process = subprocess.Popen(extract_command(tree, store), stderr=subprocess.PIPE, text=True)
    wait_for_commit(store, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    partial = len(open_store(store))
    assert 4 <= partial < len(reference)
    result = run_until_done(tree, store)
    assert f"unchanged {partial}" in result.stdout
    assert len(open_store(store)) == len(reference)


def test_a_second_extract_on_the_same_store_exits_at_once(tree: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    store.mkdir()
    with store_lock(store):
        started = time.monotonic()
        result = subprocess.run(extract_command(tree, store), capture_output=True, text=True, timeout=120)
    assert result.returncode == exitcodes.REFUSED
    assert f"another extract is writing to this store (pid {os.getpid()})" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60  # refused before any model work
