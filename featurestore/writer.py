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
import sys
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
    RetiredPiece,
    StoreError,
    read_manifest,
)
from featurestore.fsutil import atomic_write_bytes
from featurestore.h5write import WriteError, h5_writing, write_and_publish
from featurestore.index import load_rows, remove_unnamed_indexes, write_index
from featurestore.lock import FolderLock, store_lock
from featurestore.piece_maps import write_contiguous
from featurestore.splits import SPLITS, SplitFractions


class SettingsMismatch(StoreError):
    """The store was built with other settings: nothing is done unless asked to --rebuild."""

    exit_code = exitcodes.REFUSED


CHUNK_BYTES = 2**20  # 1 MiB chunks (32 rows of 4x4x512 float32): large sequential reads
DEFAULT_RETAIN_SECONDS = 24 * 3600.0  # replaced pieces stay this long for readers opened before
INDEX_TAIL_ROWS = 16 * 512  # rows committed after the index before a commit rewrites it ...
INDEX_TAIL_FRACTION = 8  # ... or 1/8 of the indexed rows, whichever is more (amortised O(rows))


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
        retain_seconds: float = DEFAULT_RETAIN_SECONDS,
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
        self.retain_seconds = retain_seconds
        self._published = False  # whether this writer has committed
        self._failed: WriteError | None = None  # the write that failed; nothing more is tried

    def __enter__(self) -> StoreWriter:
        self.path.mkdir(parents=True, exist_ok=True)
        if self._own_lock:
            self._lock.__enter__()
        try:
            self.manifest = self._start()
            self._remove_leftovers()
            self._repair_index()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if exc_type is None and self._failed is None:
                if self._target == REBUILD_MANIFEST:
                    self._switch()  # only a rebuild that ran to its end replaces the live content
                self._finish_index()
        finally:
            self._release()

    def _release(self) -> None:
        if self._own_lock:
            self._lock.__exit__()

    def _repair_index(self) -> None:
        """A damaged or missing index is rebuilt from the pieces before anyone plans on it.

        Deletions folded into the lost index come back as live rows until the caller's diff
        deletes them again (extract does so in the same run)."""
        committed = self._committed
        if committed is None or committed.index is None:
            return
        try:
            load_rows(self.path, committed)
        except (StoreError, FileNotFoundError) as exc:
            print(f"warning: {exc}; rebuilding the index from the pieces", file=sys.stderr)
            current = self.manifest
            assert current is not None
            rebuilt = self._publish(
                self._with_index(dataclasses.replace(committed, index=None)), previous=committed
            )
            self._published = False  # a rebuild has still committed nothing of its own
            self.manifest = (
                current
                if self._rebuild
                else dataclasses.replace(current, index=rebuilt.index, deleted={}, retired=rebuilt.retired)
            )

    def _finish_index(self) -> None:
        """Leave an index that covers every piece, so the next open reads one file (this also
        upgrades a store of an older format). Same generation: the live view is unchanged."""
        manifest = self._committed
        if manifest is None or (self._rebuild and not self._published):
            return  # nothing on disk yet, or a rebuild that committed nothing: leave it as it is
        covered = manifest.index.pieces if manifest.index else 0
        if covered == len(manifest.pieces) and not manifest.deleted and manifest.index is not None:
            return
        if not manifest.pieces and manifest.index is None and not manifest.deleted:
            return
        self._publish(self._with_index(manifest), previous=manifest)

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
        named = {Path(p.file).name for p in (*self.manifest.pieces, *self.manifest.retired)}
        if self._committed is not None:
            named |= {Path(p.file).name for p in (*self._committed.pieces, *self._committed.retired)}
        for entry in (self.path / PIECES).iterdir():
            if entry.name not in named:
                entry.unlink()
        remove_unnamed_indexes(self.path, self._committed.index if self._committed else None)

    # -- commits -----------------------------------------------------------------------
    def write_piece(self, rows: list[Row]) -> PieceInfo:
        """Write `rows` as one piece of this store (not yet committed)."""
        assert self.manifest is not None, "use StoreWriter as a context manager"
        self._refuse_after_failure()
        try:
            return write_piece(self.path, rows, fingerprint=self.manifest.fingerprint)
        except WriteError as exc:
            self._failed = exc
            raise

    def write_piece_columns(self, columns: PieceColumns, *, contiguous: bool = False) -> PieceInfo:
        """`write_piece` of rows given as columns (not yet committed); `contiguous`: maps in
        the layout of large pieces (`write_piece_columns`)."""
        assert self.manifest is not None, "use StoreWriter as a context manager"
        self._refuse_after_failure()
        try:
            return write_piece_columns(
                self.path, columns, fingerprint=self.manifest.fingerprint, contiguous=contiguous
            )
        except WriteError as exc:
            self._failed = exc
            raise

    def _refuse_after_failure(self) -> None:
        """After a failed write (a full disk), never try again: the same error, at once."""
        if self._failed is not None:
            raise WriteError(str(self._failed))

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
        return self.publish(
            dataclasses.replace(
                self.manifest,
                generation=generation,
                pieces=(*self.manifest.pieces, *new),
                deleted=deleted_now,
                failures=all_failures,
            )
        )

    def publish(self, manifest: Manifest, *, index: bool = False) -> Manifest:
        """Commit `manifest` (a new generation built from this writer's): pieces the manifest on
        disk named and this one does not are retired, kept for `retain_seconds` for the readers
        that opened before; the index is rewritten when due (or when `index` is set)."""
        if self._target == REBUILD_MANIFEST:
            return self._publish_rebuild(manifest)
        previous = self._committed
        manifest = dataclasses.replace(manifest, retired=self._retired(previous, manifest))
        if index or self._index_due(manifest):
            manifest = self._with_index(manifest)
        return self._publish(manifest, previous=previous)

    def _publish_rebuild(self, manifest: Manifest) -> Manifest:
        """A commit of a rebuild: to `REBUILD_MANIFEST`, beside the live content, which readers
        keep reading. No index (the live one stays the live manifest's) and nothing retired:
        `_switch` does both when the rebuild completes."""
        self._refuse_after_failure()
        manifest = dataclasses.replace(manifest, updated=_now().isoformat(timespec="seconds"))
        try:
            atomic_write_bytes(self.path / REBUILD_MANIFEST, manifest.to_json())
        except OSError as exc:
            self._failed = WriteError(
                f"{self.path / REBUILD_MANIFEST}: cannot write the rebuild's manifest "
                f"({exc.strerror or exc}); the last commit is intact"
            )
            raise self._failed from None
        self.manifest = manifest
        self._published = True
        return manifest

    def _switch(self) -> None:
        """A completed rebuild: make its manifest the live one in one rename, with an index of
        its pieces; the old content is retired like any replaced piece (readers opened before
        keep reading it for `retain_seconds`)."""
        assert self.manifest is not None and self._committed is not None
        generation = max(self.manifest.generation, self._committed.generation + 1)
        switched = dataclasses.replace(self.manifest, generation=generation, index=None, retired=())
        self._target = MANIFEST
        self.publish(switched, index=bool(switched.pieces))  # an empty store needs no index
        # A kill before this unlink leaves a rebuild.json at or below the live generation: the
        # next rebuild starts afresh, any other run deletes it.
        (self.path / REBUILD_MANIFEST).unlink(missing_ok=True)

    def _publish(self, manifest: Manifest, *, previous: Manifest | None) -> Manifest:
        self._refuse_after_failure()
        manifest = dataclasses.replace(manifest, updated=_now().isoformat(timespec="seconds"))
        try:
            atomic_write_bytes(self.path / MANIFEST, manifest.to_json())
        except OSError as exc:
            self._failed = WriteError(
                f"{self.path / MANIFEST}: cannot write the manifest ({exc.strerror or exc}); "
                "the last commit is intact"
            )
            raise self._failed from None
        self.manifest = self._committed = manifest
        self._published = True
        # Only now may what the old manifest named go: an index is read at once (a reader that
        # lost the race reads the manifest again); a piece only after its retention.
        remove_unnamed_indexes(self.path, manifest.index)
        kept = {p.file for p in manifest.pieces} | {r.file for r in manifest.retired}
        for old in (*(previous.retired if previous else ()), *(previous.pieces if previous else ())):
            if old.file not in kept:
                (self.path / old.file).unlink(missing_ok=True)
        return manifest

    def _retired(self, previous: Manifest | None, manifest: Manifest) -> tuple[RetiredPiece, ...]:
        """Pieces kept for readers: those still in retention, and those the new manifest drops
        (unless the retention is zero). The others are deleted once the manifest is written."""
        now = _now()
        until = (now + dt.timedelta(seconds=self.retain_seconds)).isoformat(timespec="seconds")
        named = {p.file for p in manifest.pieces}
        # A zero retention (`compact --retain 0`) lets every replaced piece go now.
        kept = [
            r
            for r in (previous.retired if previous else ())
            if not _expired(r, now) and self.retain_seconds > 0
        ]
        kept_files = {r.file for r in kept}
        dropped = [
            RetiredPiece(file=p.file, until=until)
            for p in (previous.pieces if previous else ())
            if p.file not in named and p.file not in kept_files
        ]
        if self.retain_seconds <= 0:
            dropped = []
        return tuple(r for r in (*kept, *dropped) if r.file not in named)

    def _index_due(self, manifest: Manifest) -> bool:
        index = manifest.index
        tail = sum(p.rows for p in manifest.pieces[index.pieces if index else 0 :])
        return tail >= max(INDEX_TAIL_ROWS, (index.rows if index else 0) // INDEX_TAIL_FRACTION)

    def _with_index(self, manifest: Manifest) -> Manifest:
        self._refuse_after_failure()
        try:
            return self._write_index(manifest)
        except WriteError as exc:
            self._failed = exc
            raise

    def _write_index(self, manifest: Manifest) -> Manifest:
        """`manifest` naming a new index of all its pieces; the deletions it folds in are dropped
        from the manifest, which so stays small however many nights pass."""
        rows, live = load_rows(self.path, manifest)
        info = write_index(self.path, rows, live, manifest.pieces, manifest.generation)
        return dataclasses.replace(manifest, index=info, deleted={})

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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _expired(retired: RetiredPiece, now: dt.datetime) -> bool:
    try:
        until = dt.datetime.fromisoformat(retired.until)
    except ValueError:
        return True  # unreadable: it was meant to go
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.timezone.utc)
    return until <= now


@dataclasses.dataclass(frozen=True, kw_only=True)
class PieceColumns:
    """The rows of one piece as columns: what `write_piece_columns` writes (compaction moves
    rows this way, without one Python object per row)."""

    ids: list[str]
    paths: list[str]
    labels: list[str]  # "" when unlabeled
    splits: list[str]
    sizes: np.ndarray
    mtime_ns: np.ndarray
    maps: dict[str, np.ndarray]  # dataset name -> (n, ...) stacked maps

    @classmethod
    def of_rows(cls, rows: list[Row]) -> PieceColumns:
        return cls(
            ids=[r.image_id for r in rows],
            paths=[r.relpath for r in rows],
            labels=[r.label or "" for r in rows],
            splits=[r.split for r in rows],
            sizes=np.array([r.size for r in rows], np.int64),
            mtime_ns=np.array([r.mtime_ns for r in rows], np.int64),
            maps={name: np.stack([r.maps[name] for r in rows]) for name in rows[0].maps},
        )

    def __len__(self) -> int:
        return len(self.ids)

    def sorted(self) -> PieceColumns:
        """Sorted by split, then path: a split is one contiguous slice of the piece."""
        order = {split: i for i, split in enumerate(SPLITS)}
        at = sorted(range(len(self)), key=lambda i: (order[self.splits[i]], self.paths[i]))
        if at == list(range(len(self))):
            return self
        index = np.array(at, np.int64)
        return PieceColumns(
            ids=[self.ids[i] for i in at],
            paths=[self.paths[i] for i in at],
            labels=[self.labels[i] for i in at],
            splits=[self.splits[i] for i in at],
            sizes=self.sizes[index],
            mtime_ns=self.mtime_ns[index],
            maps={name: values[index] for name, values in self.maps.items()},
        )


def write_piece(store_dir: str | Path, rows: list[Row], *, fingerprint: Fingerprint) -> PieceInfo:
    """Write `rows` as one immutable piece in `store_dir/pieces/` (temp, fsync, rename).

    The piece is not part of the store until a `StoreWriter.commit` names it; its generation
    is set then. Rows are sorted by split and path, so a split is one contiguous slice.
    """
    if not rows:
        raise ValueError("a piece needs at least one row")
    return write_piece_columns(store_dir, PieceColumns.of_rows(rows), fingerprint=fingerprint)


def write_piece_columns(
    store_dir: str | Path, columns: PieceColumns, *, fingerprint: Fingerprint, contiguous: bool = False
) -> PieceInfo:
    """`write_piece` of rows given as columns. With `contiguous`, each map dataset is one
    contiguous block checked by XXH3 digests (`featurestore.piece_maps`): what `compact` writes, so
    that a split read of a large piece is one read; otherwise chunks with fletcher32."""
    if not len(columns):
        raise ValueError("a piece needs at least one row")
    store_dir = Path(store_dir)
    columns = columns.sorted()
    name = f"p{uuid.uuid4().hex[:16]}.h5"
    tmp, final = store_dir / TMP / name, store_dir / PIECES / name
    digest = write_and_publish(
        tmp, final, "piece", lambda path: _write_columns(path, columns, fingerprint, contiguous=contiguous)
    )
    return PieceInfo(file=f"{PIECES}/{name}", rows=len(columns), sha256=digest, generation=0)


def write_piece_file(path: Path, rows: list[Row], fingerprint: Fingerprint) -> None:
    """A plain HDF5 file of `rows`, in the given order (see `_write_columns`)."""
    _write_columns(path, PieceColumns.of_rows(rows), fingerprint)


def _write_columns(
    path: Path, columns: PieceColumns, fingerprint: Fingerprint, *, contiguous: bool = False
) -> None:
    """A plain HDF5 file: one dataset per column and per map, each checksummed with fletcher32
    (strings are fixed-length utf-8, which HDF5 can checksum; variable-length ones it cannot),
    or for `contiguous` maps with an XXH3-64 digest per block of rows (`featurestore.piece_maps`)."""
    n = len(columns)
    with h5_writing(path, "piece") as f:
        _text_column(f, "ids", columns.ids)
        _text_column(f, "paths", columns.paths)
        _text_column(f, "labels", columns.labels)
        _text_column(f, "splits", columns.splits)
        f.create_dataset("sizes", data=np.asarray(columns.sizes, np.int64), fletcher32=True)
        f.create_dataset("mtime_ns", data=np.asarray(columns.mtime_ns, np.int64), fletcher32=True)
        for name, stacked in columns.maps.items():
            if contiguous:
                write_contiguous(f, name, stacked)
                continue
            f.create_dataset(
                name,
                data=stacked,
                chunks=(min(n, max(1, CHUNK_BYTES // max(1, stacked[0].nbytes))), *stacked.shape[1:]),
                fletcher32=True,
            )
        f.attrs["fingerprint_digest"] = fingerprint.digest


def _text_column(f: h5py.File, name: str, values: list[str]) -> None:
    encoded = [v.encode("utf-8") for v in values]
    width = max(1, *(len(v) for v in encoded))
    data = np.array(encoded, dtype=f"S{width}").astype(h5py.string_dtype("utf-8", width))
    f.create_dataset(name, data=data, fletcher32=True)
