"""A real finetune process killed with SIGKILL, or stopped with SIGTERM, after a checkpoint,
then rerun: it continues.

The SIGKILL run fine-tunes from augmented images with --unfreeze block4, so it is also the test
that block4 trains there while block3 stays frozen. Another kills a run from the cache that draws
each image's stored views (flipped, augmented): resumed, it ends with the uninterrupted run's
weights.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from classifiers.finetune.checkpoint import STATE
from featurestore.runs import list_runs
from tests.classifiers.finetune.conftest import SIZE, VIEWS

pytestmark = pytest.mark.xdist_group("finetune")
EPOCHS = 4


def _command(store: Path, head: Path, out: Path, *extra: str, epochs: int = EPOCHS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "classifiers.cli",
        "finetune",
        str(store),
        "--head",
        str(head),
        "--out",
        str(out),
        "--weights",
        "random",
        "--epochs",
        str(epochs),
        "--batch-size",
        "4",
        "--patience",
        "100",
        "--json",
        *(extra or ("--unfreeze", "block4")),
    ]


def _finished_epochs(out: Path) -> int:
    try:
        return int(json.loads((out / "checkpoint" / STATE).read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[3])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def _signal_after_first_checkpoint(command: list[str], out: Path, signum: int) -> tuple[int, str]:
    """Start `command`, send `signum` once an epoch is checkpointed; (exit code, stderr)."""
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while _finished_epochs(out) < 1 and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    process.send_signal(signum)  # (a no-op when it has already ended)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def _interrupt_mid_run(
    command_for: Callable[[int], list[str]], out: Path, signum: int, epochs: int
) -> tuple[int, str, list[str], int]:
    """Signal a run after its first checkpoint and before its end: (exit code, stderr, the
    command, its epochs). On a fast machine a short run can end before the signal lands; it
    is then rerun from scratch with 4x the epochs (an epoch takes ~1 s on a 2-core AVX2 CPU,
    a few tens of ms with AVX-512 bf16)."""
    for _ in range(4):
        command = command_for(epochs)
        code, stderr = _signal_after_first_checkpoint(command, out, signum)
        finished = _finished_epochs(out)
        if not (out / "metadata.json").exists() and finished < epochs:
            assert finished >= 1, f"ended before its first checkpoint: {stderr[-2000:]}"
            return code, stderr, command, epochs
        shutil.rmtree(out)  # the signal landed after the last epoch: too short to interrupt
        epochs *= 4
    raise AssertionError(f"every run finished before the signal, up to {epochs // 4} epochs")


def test_sigterm_after_a_checkpoint_exits_143_in_one_line_then_rerun_resumes(
    tiny_store: Path, dense_head: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    code, stderr, command, epochs = _interrupt_mid_run(
        lambda n: _command(tiny_store, dense_head, out, "--from-cache", "--no-augment", epochs=n),
        out,
        signal.SIGTERM,
        8,
    )
    stopped_at = _finished_epochs(out)
    assert 1 <= stopped_at < epochs, "stopped too late to test a resume"
    assert code == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"Error: interrupted by SIGTERM; finished epochs are kept in {out / 'checkpoint'}; rerun to resume"
    )
    assert not (out / "metadata.json").exists()
    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming after epoch {stopped_at}" in rerun.stderr
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["training"]["resumed_from"] == stopped_at
    # Both runs are in the store's history: the stopped one says so (the store is shared, so
    # pick this test's runs by their --out).
    # (the last two: runs too short to interrupt, retried with more epochs, came before them)
    runs = [r for r in list_runs(tiny_store, kind="finetune") if str(out) in r["argv"]][-2:]
    assert [(r["status"], r["exit_code"]) for r in runs] == [("interrupted", 143), ("ok", 0)]
    assert runs[1]["extra"]["model"] == str(out) and runs[1]["stages"]["total"]["seconds"] > 0


def test_sigkill_after_a_checkpoint_then_rerun_continues(
    tiny_store: Path, dense_head: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    env = _env()
    _, _, command, epochs = _interrupt_mid_run(
        lambda n: _command(tiny_store, dense_head, out, epochs=n), out, signal.SIGKILL, EPOCHS
    )
    killed_at = _finished_epochs(out)
    assert 1 <= killed_at < epochs, "killed too late to test a resume"
    before = json.loads((out / "checkpoint" / STATE).read_text())["history"]
    assert not (out / "metadata.json").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming after epoch {killed_at}" in rerun.stderr
    epoch_lines = [line for line in rerun.stderr.splitlines() if line.startswith("epoch ")]
    assert epoch_lines[0].startswith(f"epoch {killed_at + 1}/{epochs}:")  # continues, not restarts
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert report["training"]["resumed_from"] == killed_at
    assert report["training"]["epochs_run"] == epochs
    history = json.loads((out / "metadata.json").read_text())["training"]["history"]
    assert all(history[key][:killed_at] == values[:killed_at] for key, values in before.items())
    assert len(history["loss"]) == epochs

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


def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(
    views_store: Path, views_head: Path, tmp_path: Path
) -> None:
    from classifiers.finetune.saved import MODEL_FILE, load_network

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _, _, command, epochs = _interrupt_mid_run(
        lambda n: _command(views_store, views_head, resumed, "--from-cache", "--augment", epochs=n),
        resumed,
        signal.SIGKILL,
        EPOCHS,
    )
    rerun = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming after epoch" in rerun.stderr
    once = subprocess.run(
        _command(views_store, views_head, whole, "--from-cache", "--augment", epochs=epochs),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert once.returncode == 0, once.stderr[-2000:]

    reports = [json.loads(r.stdout.strip().splitlines()[-1]) for r in (rerun, once)]
    assert reports[0]["training"]["resumed_from"] >= 1 and reports[1]["training"]["resumed_from"] == 0
    for report in reports:
        assert report["training"]["cached_views"] == {"flipped_views": True, "augmented_views": VIEWS}
    assert f"and their stored views (flipped + {VIEWS} augmented)" in once.stdout
    meta = [json.loads((out / "metadata.json").read_text()) for out in (resumed, whole)]
    assert meta[0]["training"]["history"] == meta[1]["training"]["history"]
    assert meta[0]["training"]["cached_views"] == meta[1]["training"]["cached_views"]
    a, b = load_network(resumed / MODEL_FILE), load_network(whole / MODEL_FILE)
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)
