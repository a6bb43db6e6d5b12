"""Progress: periodic lines in a log, a bar on a terminal, one final line either way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest

from featurestore.progress import Progress, format_duration
from tests.conftest import REPO_ROOT


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines_of(stream) -> list[str]:
    stream.seek(0)
    return stream.read().splitlines()


def test_a_log_gets_a_line_every_interval_with_rate_eta_and_failures() -> None:
    clock = FakeClock()
    with tempfile.TemporaryFile("w+") as log:  # a real file: not a terminal
        progress = Progress(1000, label="extract", stream=log, interval=30, clock=clock)
        for step in range(1, 11):  # 10 s a step, 20 images a step: 2 images/s
            clock.now += 10
            progress.update(step * 20, failed=step // 5)
        progress.close()
        progress.close()  # once only
        lines = lines_of(log)
    assert lines[0] == "extract: 1000 images to process"
    assert lines[1:4] == [
        "extract: 60/1000 (6.0%), 2.0 images/s, ETA 7m50s, 0 failed",
        "extract: 120/1000 (12.0%), 2.0 images/s, ETA 7m20s, 1 failed",
        "extract: 180/1000 (18.0%), 2.0 images/s, ETA 6m50s, 1 failed",
    ]
    assert lines[4:] == ["extract: 200/1000 in 1m40s (2.0 images/s), 2 failed"]


def test_the_rate_in_a_line_is_the_recent_one() -> None:
    clock = FakeClock()
    with tempfile.TemporaryFile("w+") as log:
        progress = Progress(None, label="job", stream=log, interval=10, clock=clock)
        clock.now += 10
        progress.update(100)  # 10 images/s while warm
        clock.now += 10
        progress.update(110)  # then 1 image/s
        lines = lines_of(log)
    assert lines == [
        "job: 100, 10.0 images/s, 0 failed",
        "job: 110, 1.0 images/s, 0 failed",
    ]  # no total: no ETA


def test_a_terminal_gets_a_bar_and_the_final_line() -> None:
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        progress = Progress(50, label="extract", stream=tty, interval=30)
        for done in range(0, 51, 10):
            progress.update(done, failed=1)
        progress.close()
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    text = output.decode()
    assert "50/50" in text and "\r" in text  # tqdm redraws in place
    assert "1 failed" in text
    assert re.search(r"extract: 50/50 in \d+s \(.* images/s\), 1 failed", text)
    assert "images to process" not in text  # that line is for logs


def test_disabled_writes_nothing_and_going_backwards_is_a_bug() -> None:
    with tempfile.TemporaryFile("w+") as log:
        progress = Progress(10, stream=log, enabled=False)
        progress.update(5)
        progress.close()
        assert lines_of(log) == []
        with pytest.raises(ValueError, match="backwards"):
            progress.update(4)


def test_durations_read_naturally() -> None:
    assert [format_duration(s) for s in (0, 45.4, 185, 7620)] == ["0s", "45s", "3m05s", "2h07m"]


_JOB = """
import sys, time
from featurestore.progress import Progress
progress = Progress(40, label="extract", interval=0.2)
for done in range(1, 41):
    time.sleep(0.025)
    progress.update(done, failed=done // 20)
progress.close()
"""


def test_a_real_process_writing_to_a_pipe_logs_lines_as_it_goes() -> None:
    job = subprocess.run(
        [sys.executable, "-c", _JOB], stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, timeout=60, check=True
    )
    lines = job.stderr.splitlines()
    assert lines[0] == "extract: 40 images to process"
    periodic = [
        line
        for line in lines[1:-1]
        if re.fullmatch(r"extract: \d+/40 \(.*%\), .* images/s, ETA \d+s, \d failed", line)
    ]
    assert len(periodic) >= 2 and len(periodic) == len(lines) - 2  # nothing else: no bar codes
    assert re.fullmatch(r"extract: 40/40 in \ds \(.* images/s\), 2 failed", lines[-1])
    assert "\r" not in job.stderr and "\x1b" not in job.stderr
