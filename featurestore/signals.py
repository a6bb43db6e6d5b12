"""SIGTERM and Ctrl-C for long jobs: finish or keep what is done, then stop with `JobInterrupted`.

Two styles, one per kind of job: `StopOnSignal` sets a flag that a loop checks between units of
work (extract commits its pending rows, then stops); `interrupt_on_signal` turns SIGTERM into
KeyboardInterrupt like Ctrl-C, for jobs whose work stops by exception (bench's worker pool,
finetune's epochs, both of which checkpoint what finished).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """Turn SIGTERM and SIGINT into `.signum`, checked between units of work (main thread only).

    A second signal raises KeyboardInterrupt at once: whoever insists gets a stop now, and the
    job's own commit discipline keeps what was committed.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


@contextlib.contextmanager
def interrupt_on_signal() -> Iterator[list[int]]:
    """SIGTERM raises KeyboardInterrupt as Ctrl-C does; the yielded list receives the signum.

    Python's default SIGTERM kills the process at once: worker pools would run on unattended and
    nothing could say what was kept.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield received
        return

    def interrupt(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, interrupt)
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        yield received
    except KeyboardInterrupt:
        if not received:
            received.append(signal.SIGINT)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
