"""Helpers of the fault tests (docs/faults.md): real CLI processes, paused at a named step and
killed with a real SIGKILL there, or resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_image

SIZE = 32  # the smallest VGG16 input: fast on a shared CPU


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "classifiers.cli", *map(str, args)]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run one `featurestore` command in this process (the processes that are killed are
    `Paused`; the rest need not pay TensorFlow's start-up each time)."""
    from click.testing import CliRunner

    from classifiers.cli import main

    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def extract_args(source: Path, store: Path, *more: str | Path, size: int = SIZE) -> list[str | Path]:
    return ["extract", source, "--store", store, "--weights", "random", "--input-size", str(size), *more]


def image_tree(root: Path, count: int = 12) -> Path:
    """Two classes of tiny random images."""
    for i in range(count):
        write_image(root / ("cats" if i % 2 else "dogs") / f"{i:03d}.png", seed=i, size=(40, 32))
    return root


class Paused:
    """A CLI process paused at `STEP:NAME` (see `featurestore.fsutil`): SIGKILL it there, or let
    it go on."""

    def __init__(self, args: list[str | Path], at: str, marker: Path, timeout: float = 300) -> None:
        self.marker = marker
        marker.unlink(missing_ok=True)
        env = {**os.environ, "FEATURESTORE_PAUSE_AT": at, "FEATURESTORE_PAUSE_FILE": str(marker)}
        self.process = subprocess.Popen(
            command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise AssertionError(f"ended (exit {self.process.returncode}) before {at}: {err}")
            assert time.monotonic() < deadline, f"never reached {at}"
            time.sleep(0.02)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=60)
        assert self.process.returncode == -signal.SIGKILL

    def resume(self, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        self.marker.unlink()
        out, err = self.process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)
