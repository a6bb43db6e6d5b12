"""Durable file operations: write to a temporary name, fsync, rename, fsync the folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file's data, or a folder's entries (a rename is durable only after the latter)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared store from its readers
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary file into place durably (readable by all, as a normal file)."""
    os.chmod(tmp, 0o644)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
