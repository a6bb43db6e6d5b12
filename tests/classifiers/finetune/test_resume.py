"""A real finetune process killed with SIGKILL after a checkpoint, then rerun: it continues.

It fine-tunes from augmented images with --unfreeze block4, so this is also the test that block4
trains there while block3 stays frozen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from classifiers.finetune.checkpoint import STATE
from tests.classifiers.finetune.conftest import SIZE

pytestmark = pytest.mark.xdist_group("finetune")
EPOCHS = 4


def _command(store: Path, head: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "classifiers.finetune.command",
        str(store),
        "--head",
        str(head),
        "--out",
        str(out),
        "--weights",
        "random",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "4",
        "--patience",
        "100",
        "--unfreeze",
        "block4",
        "--json",
    ]


def _finished_epochs(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoint" / STATE).read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_after_a_checkpoint_then_rerun_continues(
    tiny_store: Path, dense_head: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        _command(tiny_store, dense_head, out),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while _finished_epochs(out) < 1:
        assert process.poll() is None, (
            f"ended before its first checkpoint: {process.communicate()[1][-2000:]}"
        )
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = _finished_epochs(out)
    assert 1 <= killed_at < EPOCHS, "killed too late to test a resume"
    before = json.loads((out / "checkpoint" / STATE).read_text())["history"]
    assert not (out / "metadata.json").exists()

    rerun = subprocess.run(
        _command(tiny_store, dense_head, out), env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming after epoch {killed_at}" in rerun.stderr
    epoch_lines = [line for line in rerun.stderr.splitlines() if line.startswith("epoch ")]
    assert epoch_lines[0].startswith(f"epoch {killed_at + 1}/{EPOCHS}:")  # continues, not restarts
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report["training"]["resumed_from"] == killed_at
    assert report["training"]["epochs_run"] == EPOCHS
    history = json.loads((out / "metadata.json").read_text())["training"]["history"]
    assert all(history[key][:killed_at] == values[:killed_at] for key, values in before.items())
    assert len(history["loss"]) == EPOCHS

    from classifiers.finetune.saved import MODEL_FILE, load_network
    from featurestore.backbone import build_conv_base

    tuned, base = load_network(out / MODEL_FILE), build_conv_base(SIZE, None)
    for name, trained in (("block4_conv1", True), ("block3_conv3", False)):
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                tuned.get_layer(name).get_weights(), base.get_layer(name).get_weights(), strict=True
            )
        )
        assert same is not trained, name
