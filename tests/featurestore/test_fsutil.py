"""Durable writes on real files: old or new content and never a leftover, readable by all, synced."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurestore import fsutil


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """A umask that would make ordinary new files private: the helpers must not depend on it."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what each os.fsync call synced ("file" or "dir"), then really sync it."""
    calls: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return calls


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_creates_then_replaces_a_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    fsutil.atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    fsutil.atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    fsutil.atomic_write_bytes(target, b"")
    assert target.read_bytes() == b""
    assert os.listdir(tmp_path) == ["manifest.json"]  # no temporary file left behind


def test_atomic_write_makes_files_readable_by_all_whatever_the_umask(
    tmp_path: Path, strict_umask: None
) -> None:
    target = tmp_path / "manifest.json"
    fsutil.atomic_write_bytes(target, b"data")
    assert mode(target) == 0o644
    target.chmod(0o600)
    fsutil.atomic_write_bytes(target, b"again")  # a replacement gets the shared mode back too
    assert mode(target) == 0o644


def test_atomic_write_syncs_the_file_before_and_the_folder_after_the_rename(
    tmp_path: Path, synced: list[str]
) -> None:
    fsutil.atomic_write_bytes(tmp_path / "manifest.json", b"data")
    assert synced == ["file", "dir"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
@pytest.mark.parametrize("existed", [True, False])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str, existed: bool
) -> None:
    target = tmp_path / "manifest.json"
    if existed:
        target.write_bytes(b"old")

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        fsutil.atomic_write_bytes(target, b"new content that never lands")
    monkeypatch.undo()
    assert (target.read_bytes() if target.exists() else None) == (b"old" if existed else None)
    assert os.listdir(tmp_path) == (["manifest.json"] if existed else [])


def test_an_interrupt_mid_write_also_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fsutil.atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_atomic_write_into_a_missing_folder_fails_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsutil.atomic_write_bytes(tmp_path / "missing" / "manifest.json", b"data")
    assert os.listdir(tmp_path) == []


def test_publish_moves_a_finished_file_into_place_readable_by_all(
    tmp_path: Path, strict_umask: None, synced: list[str]
) -> None:
    final = tmp_path / "piece.h5"
    final.write_bytes(b"previous")
    tmp = tmp_path / ".piece.h5.tmp"
    tmp.write_bytes(b"finished piece")
    tmp.chmod(0o600)  # as mkstemp or a private umask leaves it
    fsutil.publish(tmp, final)
    assert final.read_bytes() == b"finished piece"
    assert mode(final) == 0o644
    assert not tmp.exists() and os.listdir(tmp_path) == ["piece.h5"]
    assert synced == ["file", "dir"]  # the data before the rename, the folder entry after


def test_publish_of_a_missing_file_leaves_the_old_one(tmp_path: Path) -> None:
    final = tmp_path / "piece.h5"
    final.write_bytes(b"previous")
    with pytest.raises(FileNotFoundError):
        fsutil.publish(tmp_path / ".gone.tmp", final)
    assert final.read_bytes() == b"previous"


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (3 << 20) + 17])  # empty, tiny, more than one read
def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert fsutil.file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_file_sha256_of_a_known_file_and_of_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert fsutil.file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(FileNotFoundError):
        fsutil.file_sha256(tmp_path / "missing")


def test_fsync_path_syncs_files_and_folders(tmp_path: Path, synced: list[str]) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fsutil.fsync_path(tmp_path / "f")
    fsutil.fsync_path(tmp_path)
    assert synced == ["file", "dir"]
    with pytest.raises(FileNotFoundError):
        fsutil.fsync_path(tmp_path / "missing")
