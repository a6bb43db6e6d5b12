"""Durable file operations: every file and folder the project writes goes through these.

The pattern is always the same: write under a unique temporary name beside the target, fsync,
rename over the target, fsync the folder. Readers then see the old or the new content, never a
mix, and a crash leaves at most a temporary name that `remove_stale_temps` recognises (it holds
the pid of the process that wrote it). Each writer deletes the temporaries that dead writers
of the same target left (`atomic_file`, `atomic_folder`), so a kill's leftovers do not pile up.

Fault points, for tests and the soak (docs/faults.md): with FEATURESTORE_PAUSE_AT set to
"STEP:NAME" (STEP is `before-rename` or `between-renames`, NAME a target's file name), the
process that reaches that step for that target creates the file FEATURESTORE_PAUSE_FILE and
waits there until that file is deleted, so that a test can SIGKILL it at exactly that point, or
look at what other processes see there and let it go on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# ".NAME.<pid>.<hex>.tmp[ENDING]": the pid tells a dead writer's leftover from a live writer's
# file; ENDING is kept for libraries that insist on a file ending (Keras' ".weights.h5").
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.[^/]*)?$")
# ".NAME.<pid>.<hex>.old": a folder moved aside while its replacement is moved in.
_OLD = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.old$")


def fsync_path(path: Path) -> None:
    """fsync a file's data, or a folder's entries (a rename is durable only after the latter)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path, suffix: str = "tmp", ending: str = "") -> Path:
    """A unique temporary name beside `path`: `.NAME.<pid>.<random>.tmp[ENDING]`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{suffix}{ending}")


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def _pause_point(step: str, target: Path) -> None:
    """Pause here if FEATURESTORE_PAUSE_AT names this step and target (see the module docstring)."""
    if os.environ.get("FEATURESTORE_PAUSE_AT") != f"{step}:{target.name}":
        return
    marker = Path(os.environ.get("FEATURESTORE_PAUSE_FILE", ".featurestore-paused"))
    marker.write_text(f"{os.getpid()}\n")
    deadline = time.monotonic() + 3600
    while marker.exists() and time.monotonic() < deadline:  # until killed, or the file is deleted
        time.sleep(0.01)


def publish(tmp: Path, final: Path) -> None:
    """Move a finished temporary file into place durably (readable by all, as a normal file)."""
    os.chmod(tmp, 0o644)
    fsync_path(tmp)
    _pause_point("before-rename", final)
    os.replace(tmp, final)
    fsync_path(final.parent)


@contextlib.contextmanager
def atomic_file(path: str | Path, *, ending: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` durably, else it is removed.

    For writers that want a file name (h5py, savefig, Keras' save, np.savez); `ending` is added
    to the temporary name for those that check it (Keras: ".weights.h5", ".keras").
    """
    path = Path(path)
    remove_stale_temps(path.parent, path.name)  # what killed writers of this file left
    tmp = temp_name(path, ending=ending)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 1) -> None:
    """JSON with NaN refused (it is not JSON), written atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it takes the place of `path`, else it is removed.

    Replacing an existing folder takes two renames (old aside, new in); a kill between them
    leaves the old folder under a `.NAME.<pid>.<hex>.old` name, which `recover_folder` puts back.
    """
    path = Path(path)
    recover_folder(path)
    remove_stale_temps(path.parent, path.name)  # folders that killed writers were filling
    if path.exists() and not replace:
        raise FileExistsError(errno.EEXIST, "already exists", str(path))
    tmp = temp_name(path)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _fsync_tree(tmp)
        old = None
        _pause_point("before-rename", path)
        if path.exists():
            old = temp_name(path, "old")
            os.rename(path, old)
            _pause_point("between-renames", path)
        os.rename(tmp, path)
        fsync_path(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_folder(path: str | Path) -> None:
    """Undo the half of a folder replacement that a kill interrupted: with no folder at `path`,
    move the newest `.NAME.*.old` back; with one, delete the old copies."""
    path = Path(path)
    olds = sorted(
        (entry for entry in _siblings(path, _OLD) if not _alive(entry[1])),
        key=lambda entry: _mtime(entry[0]),
    )
    if not olds:
        return
    if not path.exists():
        newest, _ = olds.pop()
        try:
            os.rename(newest, path)
        except OSError:
            if not path.exists():
                raise
            # Another process (a reader's `recover_folder`, the next writer) put one back first.
        fsync_path(path.parent)
    for old, _ in olds:
        shutil.rmtree(old, ignore_errors=True)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # removed meanwhile by another process's recovery
        return -1


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files and folders that dead processes left in `folder` (for target
    `name` only, if given); return what was deleted. A live writer's temporaries are kept."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        if match is None or (name is not None and match["name"] != name) or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def stale_temps(folder: str | Path) -> list[Path]:
    """Temporary names of dead processes in `folder` (what `remove_stale_temps` would delete)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        entry
        for entry in folder.iterdir()
        if (match := _TEMP.match(entry.name) or _OLD.match(entry.name)) and not _alive(int(match["pid"]))
    )


def _siblings(path: Path, pattern: re.Pattern[str]) -> list[tuple[Path, int]]:
    if not path.parent.is_dir():
        return []
    found = []
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match and match["name"] == path.name:
            found.append((entry, int(match["pid"])))
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
