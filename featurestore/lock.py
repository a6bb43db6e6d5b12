"""One writer per folder: an exclusive, non-blocking flock on FOLDER/.lock.

The kernel drops the lock when the process dies, however it dies, so a crash never leaves a
stale lock behind. The store's writer and the benchmark's output folder use the same lock,
each with its own message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from featurestore.errors import FeaturestoreError

LOCK_FILE = ".lock"


class LockedError(FeaturestoreError):
    """Another process holds the folder's lock."""


class FolderLock:
    """Context manager holding `folder/.lock`; `LockedError` naming the holder's pid if taken:
    "FOLDER: BUSY_MESSAGE (pid N); ADVICE"."""

    def __init__(self, folder: str | Path, busy_message: str, advice: str = "wait for it to finish") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.busy_message = busy_message
        self.advice = advice
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{self.folder}: {self.busy_message} (pid {holder}); {self.advice}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def store_lock(store_dir: str | Path) -> FolderLock:
    """The lock of a store's one writer (extract, compact)."""
    return FolderLock(store_dir, "another extract is writing to this store")
