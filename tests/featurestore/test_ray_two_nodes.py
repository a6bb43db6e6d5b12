"""A two-node Ray cluster on one machine (`ray start --head`, then `ray start --address`), each
node a process tree with its own resources: the driver's node has no CPU, so the workers of the
other node decode, run the model and write every piece into the (shared) store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from featurestore.extract import run_extract
from featurestore.extract_config import ExtractConfig
from featurestore.store import open_store
from featurestore.verify import verify_store
from tests.conftest import write_image

if not os.environ.get("CI"):  # CI installs the ray extra: a missing Ray fails there, never skips
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

RAY = str(Path(sys.executable).with_name("ray"))
# Ray's token authentication reads one token file per user; these throwaway nodes do without it.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
NODE = ["--block", "--object-store-memory=100000000", "--disable-usage-stats"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen[bytes]) -> None:
    """`ray start --block` stops its node's processes on SIGTERM."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_nodes(address: str, count: int, timeout: float = 120) -> None:
    code = (
        "import time, ray\n"
        f"deadline = time.monotonic() + {timeout}\n"
        "while True:\n"
        "    try:\n"
        f"        ray.init(address={address!r}, logging_level='ERROR')\n"
        "        break\n"
        "    except Exception:\n"  # the head is not listening yet
        "        assert time.monotonic() < deadline\n"
        "        time.sleep(1)\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count}:\n"
        "    assert time.monotonic() < deadline, ray.nodes()\n"
        "    time.sleep(0.5)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=ENV, check=True, timeout=timeout + 60)


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    ip = socket.gethostbyname(socket.gethostname())
    address = f"{ip}:{port}"
    logs = tmp_path / "ray-logs"
    logs.mkdir()
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false", *NODE],
        env=ENV,
        stdout=open(logs / "head.log", "wb"),  # noqa: SIM115 (the process owns it)
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        wait_for_nodes(address, 1)
        worker = subprocess.Popen(
            [RAY, "start", f"--address={address}", "--num-cpus=2", *NODE],
            env=ENV,
            stdout=open(logs / "worker.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_for_nodes(address, 2)
        assert worker.poll() is None, (logs / "worker.log").read_text()
        yield address
    finally:
        if worker is not None:
            stop(worker)
        stop(head)


def test_pieces_are_written_by_the_other_node(two_nodes: str, tmp_path: Path) -> None:
    source = tmp_path / "images"
    for i in range(12):
        write_image(source / ("cats" if i % 2 else "dogs") / f"{i:03d}.png", seed=i, size=(64, 48))
    common = ["--weights", "random", "--input-size", "32", "--batch-size", "4", "--commit-every", "4"]
    reference = tmp_path / "reference"
    run_extract(
        ExtractConfig(
            source=source, store=reference, weights="random", input_size=32, batch_size=4, progress=False
        )
    )
    store = tmp_path / "shared" / "store"  # one file system: the machine's own
    command = [sys.executable, "-m", "classifiers.cli", "extract", str(source), f"--store={store}", *common]
    result = subprocess.run(
        [*command, "--engine", "ray", "--ray-address", two_nodes, "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "1 worker node(s)" in result.stderr  # the head's node has no CPU for tasks
    assert "written by workers on 1 node(s), 0 of them on the driver's node" in result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["computed"] == 12 and summary["failed"] == 0
    assert summary["stages"]["write"]["images"] == 12
    ours, theirs = open_store(store).load(), open_store(reference).load()
    assert sorted(ours.paths) == sorted(theirs.paths)
    by_path = dict(zip(theirs.paths, theirs.features, strict=True))
    for path, features in zip(ours.paths, ours.features, strict=True):
        np.testing.assert_array_equal(features, by_path[path])
    assert verify_store(store) == ([], [])
