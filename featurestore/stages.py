"""Seconds and images per stage of a job (decode, model, write), for the run record.

A job hands one `StageTimes` to the code that does the work; that code wraps each unit of work
in `timed(stage, images)` (or calls `add`). Decoding runs in worker threads, so additions are
locked, and a stage's seconds are the sum over its workers (worker-seconds): its images/s is
then the rate of one worker, and `total`, the run's wall time, says what the whole achieved.

    times = StageTimes()
    with times.timed("model", len(batch)):
        maps = extractor.embed(batch)
    times.to_dict()  # {"model": {"seconds": 1.2, "images": 32, "images_per_s": 26.7}}
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from featurestore.run_fields import stage

T = TypeVar("T")


class StageTimes:
    """Running totals of seconds and images per named stage; safe to share between threads."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._images: dict[str, int | None] = {}

    def add(self, name: str, seconds: float, images: int | None = None) -> None:
        """Add to stage `name`; `images` None for a stage that does not handle images one by
        one (discover, plan): its record has seconds only."""
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds
            before = self._images.get(name)
            self._images[name] = before if images is None else (before or 0) + images

    @contextlib.contextmanager
    def timed(self, name: str, images: int | None = None) -> Iterator[None]:
        """Add the time the block takes (also when it raises) and `images` to stage `name`."""
        started = self._clock()
        try:
            yield
        finally:
            self.add(name, self._clock() - started, images)

    def call(self, name: str, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)`, timed as one image of stage `name` (for a worker pool's submit)."""
        with self.timed(name, 1):
            return function(*args)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """{stage: {"seconds", "images", "images_per_s"}} (run_fields.stage entries)."""
        with self._lock:
            return {name: stage(self._seconds[name], self._images[name]) for name in self._seconds}
