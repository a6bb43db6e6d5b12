"""Writing an HDF5 file so that a full disk is one clear error, never a crash.

HDF5 handles a failed write badly: the error surfaces again at every later flush and close
(tracebacks from object deallocation) and a process that retries can crash. Here h5py writes
through a Python file object that remembers the first failed write (no space, quota, file size
limit) and drops the writes after it, so HDF5 always closes cleanly; then the caller gets one
`WriteError` naming the file and the reason, and nothing is tried twice.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py

from featurestore.format import StoreError
from featurestore.fsutil import file_sha256, publish


class WriteError(StoreError):
    """A file the store needed could not be written (e.g. the disk is full); nothing committed
    is lost: the last commit stays as it was. `reason` is the system's word for it."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class _Guarded(io.RawIOBase):
    """A writable, seekable file that turns the first OSError into a remembered failure."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "w+b", buffering=0)  # noqa: SIM115 - closed in close()
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        if self.error is None:
            try:
                view = memoryview(data)
                while len(view):
                    view = view[self._file.write(view) :]
            except OSError as exc:
                self.error = exc
        return size

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer) or 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._file.truncate(size)
            except OSError as exc:
                self.error = exc
        return size or 0

    def flush(self) -> None:
        pass

    def fsync(self) -> None:
        if self.error is None:
            try:
                os.fsync(self._file.fileno())
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        super().close()


@contextlib.contextmanager
def h5_writing(path: Path, what: str) -> Iterator[h5py.File]:
    """Yield a new HDF5 file at `path`; `WriteError` naming `path` if any write failed."""
    try:
        guarded = _Guarded(path)
    except OSError as exc:
        raise WriteError(f"{path}: cannot write {what} ({exc.strerror or exc})") from None
    try:
        with h5py.File(guarded, "w") as f:
            yield f
        guarded.fsync()
    finally:
        guarded.close()
    if guarded.error is not None:
        reason = guarded.error.strerror or str(guarded.error)
        raise WriteError(f"{path}: cannot write {what} ({reason}); the last commit is intact", reason)


def write_and_publish(tmp: Path, final: Path, what: str, write: Callable[[Path], None]) -> str:
    """Write a file at `tmp` with `write`, then hash it and publish it as `final` (fsync,
    rename); its sha256. Any failure removes `tmp` and nothing appears at `final`: a system
    error becomes one `WriteError` naming the file."""
    try:
        write(tmp)
        digest = file_sha256(tmp)
        publish(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"{exc.filename or tmp}: cannot write {what} ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest
