"""Progress a person or a scheduler can read: a bar on a terminal, plain lines in a log.

On a terminal, a tqdm bar. Anywhere else (cron mail, systemd's journal, Airflow's task log, a
pipe) a bar is noise, so a plain line every `interval` seconds instead:

    extract: 1200/5000 (24.0%), 35.2 images/s, ETA 1m48s, 3 failed

and, from either, one final line when the work is done:

    extract: 5000/5000 in 2m22s (35.2 images/s), 3 failed

    progress = Progress(total, label="extract")
    for ...:
        progress.update(done, failed)     # running totals, not increments
    progress.close()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

DEFAULT_INTERVAL = 30.0  # seconds between log lines: a night's log stays readable


def format_duration(seconds: float) -> str:
    """'45s', '3m05s', '2h07m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Running totals of one stage of work, shown as a bar (terminal) or periodic lines (log).

    `update(done, failed)` takes totals so far; calling it often is cheap (a line is written
    only when `interval` seconds passed). `close()` writes the final line once. The rate in the
    periodic lines is that of the last interval (what the ETA depends on); the final line gives
    the average over the whole run. `enabled=False` writes nothing at all.
    """

    def __init__(
        self,
        total: int | None,
        *,
        label: str = "progress",
        unit: str = "images",
        stream: TextIO | None = None,
        interval: float = DEFAULT_INTERVAL,
        tty: bool | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.clock = clock
        self.done = 0
        self.failed = 0
        self.closed = False
        self._started = clock()
        self._mark = (self._started, 0)  # (time, done) at the last line: the recent rate
        self._bar: Any = None
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        if enabled and tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit[:3], file=self.stream, desc=label, dynamic_ncols=True)
        elif enabled and total:
            self._write(f"{label}: {total} {unit} to process")

    def update(self, done: int, failed: int | None = None) -> None:
        """Record the totals so far; write a line if one is due."""
        if done < self.done:
            raise ValueError(f"done went backwards: {done} < {self.done}")
        step = done - self.done
        self.done = done
        if failed is not None:
            self.failed = failed
        if not self.enabled or self.closed:
            return
        if self._bar is not None:
            if failed is not None:
                self._bar.set_postfix_str(f"{self.failed} failed", refresh=False)
            self._bar.update(step)
            return
        now = self.clock()
        if now - self._mark[0] >= self.interval:
            self._write(self.line(now))
            self._mark = (now, done)

    def line(self, now: float | None = None) -> str:
        """The periodic line: done/total, recent rate, ETA, failures."""
        now = self.clock() if now is None else now
        since, done_then = self._mark
        rate = (self.done - done_then) / (now - since) if now > since else 0.0
        parts = [f"{self.label}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.done / self.total:.1f}%)"
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        parts.append(f"{self.failed} failed")
        return ", ".join(parts)

    def summary(self) -> str:
        """The final line: done/total, time, average rate, failures."""
        seconds = self.clock() - self._started
        rate = self.done / seconds if seconds > 0 else 0.0
        total = f"/{self.total}" if self.total else ""
        return (
            f"{self.label}: {self.done}{total} in {format_duration(seconds)} "
            f"({rate:.1f} {self.unit}/s), {self.failed} failed"
        )

    def close(self) -> None:
        """Stop the bar and write the final line (once)."""
        if self.closed:
            return
        self.closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        self._write(self.summary())

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()  # a scheduler's log must show it now, not when a buffer fills

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
