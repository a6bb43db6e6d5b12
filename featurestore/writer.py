"""Writing a store: immutable pieces, then a manifest that names them, each step atomic.

Two separate public calls: `write_piece` (any process that can write the store folder, e.g. a
cluster worker) and `StoreWriter.commit` (the one writer holding the lock, e.g. the driver).
Crash anywhere and the store still opens at its last manifest: a piece renamed into place but
not yet named by a manifest is an orphan, deleted by the next writer (its images are recomputed).

A rebuild of an existing store commits to a manifest of its own (`REBUILD_MANIFEST`) beside the
live one, and switches the live manifest to it in one atomic rename when it completes; readers
read the old content until then, and a rebuild killed or stopped before is resumed by the next
rebuild with the same settings (a plain run abandons it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featurestore import exitcodes
from featurestore.fingerprint import Fingerprint
from featurestore.format import (
    MANIFEST,
    PIECES,
    REBUILD_MANIFEST,
    TMP,
    Manifest,
    PieceInfo,
    StoreError,
    read_manifest,
)
from featurestore.fsutil import atomic_write_bytes, file_sha256, publish
from featurestore.lock import FolderLock, store_lock
from featurestore.splits import SPLITS, SplitFractions


class SettingsMismatch(StoreError):
    """The store was built with other settings: nothing is done unless asked to --rebuild."""

    exit_code = exitcodes.REFUSED


CHUNK_ROWS = 32  # 32 rows of 4x4x512 float32 = 1 MiB chunks: large sequential reads


@dataclasses.dataclass(frozen=True)
class Row:
    """One image's row: small columns plus its maps, keyed by dataset name in the piece."""

    relpath: str
    image_id: str
    label: str | None
    split: str
    size: int
    mtime_ns: int
    maps: dict[str, np.ndarray]


class StoreWriter:
    """The one writer of a store. Use as a context manager: it holds the store's lock."""

    def __init__(
        self,
        store_dir: str | Path,
        *,
        fingerprint: Fingerprint,
        split_fractions: SplitFractions,
        source_root: str,
        class_names: Iterable[str] = (),
        rebuild: bool = False,
        lock: FolderLock | None = None,
    ) -> None:
        self.path = Path(store_dir)
        self._fingerprint = fingerprint
        self._split_fractions = split_fractions
        self._source_root = source_root
        self._class_names = tuple(class_names)
        self._rebuild = rebuild
        self._own_lock = lock is None  # a caller may take the lock early, before costly work
        self._lock = lock or store_lock(self.path)
        self.manifest: Manifest | None = None
        self._committed: Manifest | None = None  # the live manifest on disk
        self._target = MANIFEST  # where commits go: REBUILD_MANIFEST while rebuilding a store

    def __enter__(self) -> StoreWriter:
        self.path.mkdir(parents=True, exist_ok=True)
        if self._own_lock:
            self._lock.__enter__()
        try:
            self.manifest = self._start()
            self._remove_leftovers()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if exc_type is None and self._target == REBUILD_MANIFEST:
                self._switch()  # only a rebuild that ran to its end replaces the live content
        finally:
            self._release()

    def _release(self) -> None:
        if self._own_lock:
            self._lock.__exit__()

    def _start(self) -> Manifest:
        fresh = Manifest(
            generation=0,
            fingerprint=self._fingerprint,
            class_names=self._class_names,
            source_root=self._source_root,
            split_fractions=self._split_fractions,
        )
        if not (self.path / MANIFEST).exists():
            return fresh
        current = read_manifest(self.path)
        self._committed = current
        if self._rebuild:
            self._target = REBUILD_MANIFEST
            restart = dataclasses.replace(fresh, generation=current.generation)
            return self._resumable(fresh, current) or restart
        differences = current.fingerprint.differences(self._fingerprint)
        if current.split_fractions != self._split_fractions:
            differences.append(
                f"split_fractions: {current.split_fractions.to_dict()} != {self._split_fractions.to_dict()}"
            )
        if differences:
            raise SettingsMismatch(
                f"{self.path}: store was built with other settings ({'; '.join(differences)}); "
                "use --rebuild to recompute it"
            )
        return dataclasses.replace(
            current,
            fingerprint=self._fingerprint,  # same identity; refresh library versions
            class_names=self._class_names or current.class_names,
            source_root=self._source_root,
        )

    def _resumable(self, fresh: Manifest, current: Manifest) -> Manifest | None:
        """The commits of an unfinished rebuild to the same settings, to go on from."""
        if not (self.path / REBUILD_MANIFEST).exists():
            return None
        try:
            side = read_manifest(self.path, REBUILD_MANIFEST)
        except StoreError:
            return None  # damaged: start the rebuild again
        if (
            side.generation <= current.generation  # already switched in
            or side.fingerprint.digest != fresh.fingerprint.digest
            or side.split_fractions != fresh.split_fractions
        ):
            return None
        return dataclasses.replace(side, class_names=fresh.class_names or side.class_names)

    def _remove_leftovers(self) -> None:
        """Delete unfinished pieces and pieces that no manifest names (a crash's leftovers).

        A rebuild keeps the live manifest's pieces, for readers and for a kill; any other run
        abandons an unfinished rebuild (its manifest and pieces).
        """
        if self._target == MANIFEST:
            (self.path / REBUILD_MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(self.path / TMP, ignore_errors=True)
        (self.path / TMP).mkdir()
        (self.path / PIECES).mkdir(exist_ok=True)
        assert self.manifest is not None
        named = {Path(p.file).name for p in self.manifest.pieces}
        if self._committed is not None:
            named |= {Path(p.file).name for p in self._committed.pieces}
        for entry in (self.path / PIECES).iterdir():
            if entry.name not in named:
                entry.unlink()

    # -- commits -----------------------------------------------------------------------
    def write_piece(self, rows: list[Row]) -> PieceInfo:
        """Write `rows` as one piece of this store (not yet committed)."""
        assert self.manifest is not None, "use StoreWriter as a context manager"
        return write_piece(self.path, rows, fingerprint=self.manifest.fingerprint)

    def commit(
        self,
        pieces: Iterable[PieceInfo] = (),
        *,
        deleted: Iterable[str] = (),
        failures: dict[str, dict[str, Any]] | None = None,
        resolved: Iterable[str] = (),
    ) -> Manifest:
        """Publish one new manifest naming the written `pieces` (in order) after the current ones.

        `deleted` relpaths leave the live view; `failures` are recorded (and retried next run);
        `resolved` relpaths (images that now have a row, or are gone) are dropped from the failures.
        """
        assert self.manifest is not None, "use StoreWriter as a context manager"
        generation = self.manifest.generation + 1
        new = [dataclasses.replace(piece, generation=generation) for piece in pieces]
        deleted_now = dict(self.manifest.deleted)
        deleted_now.update({relpath: generation for relpath in deleted})
        drop = set(resolved)
        all_failures = {k: v for k, v in self.manifest.failures.items() if k not in drop}
        all_failures.update(failures or {})
        manifest = dataclasses.replace(
            self.manifest,
            generation=generation,
            pieces=(*self.manifest.pieces, *new),
            deleted=deleted_now,
            failures=all_failures,
            updated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        atomic_write_bytes(self.path / self._target, manifest.to_json())
        self.manifest = manifest
        if self._target == MANIFEST:
            self._drop_unnamed(self._committed)
            self._committed = manifest
        return manifest

    def _switch(self) -> None:
        """A completed rebuild: make its manifest the live one in one rename, then delete the
        old content (a kill in between leaves pieces that the next writer deletes)."""
        assert self.manifest is not None and self._committed is not None
        generation = max(self.manifest.generation, self._committed.generation + 1)
        self.manifest = dataclasses.replace(self.manifest, generation=generation)
        atomic_write_bytes(self.path / MANIFEST, self.manifest.to_json())
        (self.path / REBUILD_MANIFEST).unlink(missing_ok=True)
        self._drop_unnamed(self._committed)
        self._committed = self.manifest
        self._target = MANIFEST

    def _drop_unnamed(self, previous: Manifest | None) -> None:
        """Delete the pieces that the manifest just replaced named and the new one does not (the
        old content of a rebuild): nothing names them any more."""
        if previous is None or self.manifest is None:
            return
        named = {p.file for p in self.manifest.pieces}
        for piece in previous.pieces:
            if piece.file not in named:
                (self.path / piece.file).unlink(missing_ok=True)

    def commit_rows(
        self,
        rows: list[Row],
        *,
        deleted: Iterable[str] = (),
        failures: dict[str, dict[str, Any]] | None = None,
        resolved: Iterable[str] = (),
    ) -> Manifest:
        """`write_piece` (if there are rows) and `commit` in one call."""
        pieces = [self.write_piece(rows)] if rows else []
        resolved = [*resolved, *(row.relpath for row in rows)]
        return self.commit(pieces, deleted=deleted, failures=failures, resolved=resolved)


def write_piece(store_dir: str | Path, rows: list[Row], *, fingerprint: Fingerprint) -> PieceInfo:
    """Write `rows` as one immutable piece in `store_dir/pieces/` (temp, fsync, rename).

    The piece is not part of the store until a `StoreWriter.commit` names it; its generation
    is set then. Rows are sorted by split and path, so a split is one contiguous slice.
    """
    if not rows:
        raise ValueError("a piece needs at least one row")
    store_dir = Path(store_dir)
    order = {split: i for i, split in enumerate(SPLITS)}
    rows = sorted(rows, key=lambda r: (order[r.split], r.relpath))
    name = f"p{uuid.uuid4().hex[:16]}.h5"
    tmp, final = store_dir / TMP / name, store_dir / PIECES / name
    try:
        write_piece_file(tmp, rows, fingerprint)
        digest = file_sha256(tmp)
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return PieceInfo(file=f"{PIECES}/{name}", rows=len(rows), sha256=digest, generation=0)


def write_piece_file(path: Path, rows: list[Row], fingerprint: Fingerprint) -> None:
    """A plain HDF5 file: one dataset per column and per map, checksummed with fletcher32."""
    text = h5py.string_dtype("utf-8")
    n = len(rows)
    with h5py.File(path, "w") as f:
        f.create_dataset("ids", data=[r.image_id for r in rows], dtype=text)
        f.create_dataset("paths", data=[r.relpath for r in rows], dtype=text)
        f.create_dataset("labels", data=[r.label or "" for r in rows], dtype=text)
        f.create_dataset("splits", data=[r.split for r in rows], dtype=text)
        f.create_dataset("sizes", data=np.array([r.size for r in rows], np.int64), fletcher32=True)
        f.create_dataset("mtime_ns", data=np.array([r.mtime_ns for r in rows], np.int64), fletcher32=True)
        for name in rows[0].maps:
            stacked = np.stack([r.maps[name] for r in rows])
            f.create_dataset(
                name,
                data=stacked,
                chunks=(min(n, CHUNK_ROWS), *stacked.shape[1:]),
                fletcher32=True,
            )
        f.attrs["fingerprint_digest"] = fingerprint.digest
