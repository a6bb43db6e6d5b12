"""The store index: the small columns of every committed row as columnar numpy arrays.

Opening a store reads one index file (named and checksummed by the manifest) plus the few pieces
committed after it (the tail), so it costs what it reads, never one Python object per row. The
index file is plain HDF5 (docs/store-format.md); every dataset is fixed-size and fletcher32
checksummed, and the manifest records the whole file's sha256, so damage is caught when read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from featurestore.format import INDEX, TMP, IndexInfo, Manifest, PieceInfo, StoreError
from featurestore.h5write import h5_writing, write_and_publish
from featurestore.splits import SPLITS

INDEX_CHUNK = 65536  # rows per HDF5 chunk of an index dataset
_SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
    """The small columns of rows in piece order; `piece` indexes the manifest's pieces."""

    piece: np.ndarray  # int32
    row: np.ndarray  # int32, the row within its piece
    ids: np.ndarray  # uint8 (n, 32): raw sha256 digests
    paths: np.ndarray  # object: str
    labels: np.ndarray  # int32 codes into label_names
    label_names: tuple[str, ...]  # "" is unlabeled
    splits: np.ndarray  # int8 codes into SPLITS
    sizes: np.ndarray  # int64
    mtime_ns: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.piece)

    def ids_hex(self, rows: np.ndarray | slice | None = None) -> list[str]:
        """The ids of `rows` (all by default) as hex strings."""
        raw = self.ids if rows is None else self.ids[rows]
        text = raw.tobytes().hex()
        return [text[i : i + 64] for i in range(0, len(text), 64)]

    def label_strings(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        codes = self.labels if rows is None else self.labels[rows]
        return np.array(self.label_names, dtype=object)[codes] if len(codes) else np.array([], object)

    def split_strings(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        codes = self.splits if rows is None else self.splits[rows]
        return np.array(SPLITS, dtype=object)[codes] if len(codes) else np.array([], object)


def empty_rows() -> Rows:
    return Rows(
        piece=np.zeros(0, np.int32),
        row=np.zeros(0, np.int32),
        ids=np.zeros((0, 32), np.uint8),
        paths=np.zeros(0, object),
        labels=np.zeros(0, np.int32),
        label_names=(),
        splits=np.zeros(0, np.int8),
        sizes=np.zeros(0, np.int64),
        mtime_ns=np.zeros(0, np.int64),
    )


def concat_rows(parts: Sequence[Rows]) -> Rows:
    """Rows of several parts, label codes mapped to one table."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_rows()
    if len(parts) == 1:
        return parts[0]
    names: dict[str, int] = {}
    for part in parts:
        for name in part.label_names:
            names.setdefault(name, len(names))
    labels = [
        np.array([names[n] for n in part.label_names], np.int32)[part.labels] if len(part) else part.labels
        for part in parts
    ]
    return Rows(
        piece=np.concatenate([p.piece for p in parts]),
        row=np.concatenate([p.row for p in parts]),
        ids=np.concatenate([p.ids for p in parts]),
        paths=np.concatenate([p.paths for p in parts]),
        labels=np.concatenate(labels),
        label_names=tuple(names),
        splits=np.concatenate([p.splits for p in parts]),
        sizes=np.concatenate([p.sizes for p in parts]),
        mtime_ns=np.concatenate([p.mtime_ns for p in parts]),
    )


def _text(values: np.ndarray) -> list[str]:
    """h5py gives bytes for both fixed- and variable-length utf-8 strings."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def read_piece_rows(path: Path, piece: int) -> Rows:
    """The small columns of one piece file (any format version); StoreError naming it if damaged."""
    try:
        with h5py.File(path, "r") as f:
            raw = {name: f[name][()] for name in ("ids", "paths", "labels", "splits", "sizes", "mtime_ns")}
    except FileNotFoundError:
        raise StoreError(f"{path}: committed piece is missing (run `featurestore verify`)") from None
    except (OSError, KeyError) as exc:
        raise StoreError(f"{path}: committed piece is damaged or unreadable ({exc})") from None
    n = len(raw["ids"])
    ids_text = _text(raw["ids"])
    labels = _text(raw["labels"])
    names = tuple(dict.fromkeys(labels))
    code = {name: i for i, name in enumerate(names)}
    try:
        ids = np.frombuffer(bytes.fromhex("".join(ids_text)), np.uint8).reshape(n, 32)
        splits = np.array([_SPLIT_CODE[s] for s in _text(raw["splits"])], np.int8)
    except (ValueError, KeyError) as exc:
        raise StoreError(f"{path}: committed piece is damaged (bad id or split: {exc})") from None
    return Rows(
        piece=np.full(n, piece, np.int32),
        row=np.arange(n, dtype=np.int32),
        ids=ids,
        paths=np.array(_text(raw["paths"]), dtype=object),
        labels=np.array([code[name] for name in labels], np.int32),
        label_names=names,
        splits=splits,
        sizes=np.asarray(raw["sizes"], np.int64),
        mtime_ns=np.asarray(raw["mtime_ns"], np.int64),
    )


# -- the index file -------------------------------------------------------------------------
def write_index(
    store_dir: Path, rows: Rows, live: np.ndarray, pieces: Sequence[PieceInfo], generation: int
) -> IndexInfo:
    """Write an index file of `rows` (all rows of `pieces`) and their live mask; not yet named
    by a manifest. Temp in .tmp/, fsync, rename into index/."""
    name = f"i{generation:08d}-{uuid.uuid4().hex[:8]}.h5"
    tmp, final = store_dir / TMP / name, store_dir / INDEX / name
    final.parent.mkdir(exist_ok=True)
    tmp.parent.mkdir(exist_ok=True)
    digest = write_and_publish(
        tmp, final, "index", lambda path: _write_index_file(path, rows, live, pieces, generation)
    )
    return IndexInfo(
        file=f"{INDEX}/{name}", sha256=digest, pieces=len(pieces), rows=len(rows), generation=generation
    )


def _write_index_file(
    path: Path, rows: Rows, live: np.ndarray, pieces: Sequence[PieceInfo], generation: int
) -> None:
    """The index file itself: one fletcher32-checked dataset per column."""
    with h5_writing(path, "index") as f:
        _dataset(f, "piece", rows.piece)
        _dataset(f, "row", rows.row)
        _dataset(f, "ids", rows.ids)
        blob = "\0".join(rows.paths.tolist()).encode("utf-8")
        _dataset(f, "paths", np.frombuffer(blob, np.uint8))
        _dataset(f, "labels", rows.labels)
        _dataset(f, "splits", rows.splits)
        _dataset(f, "sizes", rows.sizes)
        _dataset(f, "mtime_ns", rows.mtime_ns)
        _dataset(f, "live", live.astype(np.uint8))
        f.create_dataset("label_names", data=list(rows.label_names), dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("pieces", data=[p.file for p in pieces], dtype=h5py.string_dtype("utf-8"))
        f.attrs["generation"] = generation


def _dataset(f: h5py.File, name: str, data: np.ndarray) -> None:
    chunks = (max(1, min(len(data), INDEX_CHUNK)), *data.shape[1:])
    f.create_dataset(name, data=data, chunks=chunks, fletcher32=True)


# The last index read: its file never changes (a new index gets a new name), so the writer's
# start, the extraction's plan and its reuse lookups share one read.
_last_read: dict[tuple[str, str], tuple[Rows, np.ndarray]] = {}


def read_index(store_dir: Path, info: IndexInfo, pieces: Sequence[PieceInfo]) -> tuple[Rows, np.ndarray]:
    """(rows, live mask) of an index file, checked against its sha256 and the manifest's pieces."""
    key = (os.path.realpath(store_dir / info.file), info.sha256)
    if key in _last_read and _last_read[key][0].piece.size == info.rows:
        rows, live = _last_read[key]
        _check_pieces(store_dir / info.file, rows, pieces, info)
        return rows, live
    rows, live = _read_index(store_dir, info, pieces)
    _last_read.clear()
    _last_read[key] = (rows, live)
    return rows, live


def _check_pieces(path: Path, rows: Rows, pieces: Sequence[PieceInfo], info: IndexInfo) -> None:
    if len(pieces) < info.pieces:
        raise StoreError(f"{path}: index names more pieces than the manifest; {REPAIR}")


def _read_index(store_dir: Path, info: IndexInfo, pieces: Sequence[PieceInfo]) -> tuple[Rows, np.ndarray]:
    path = store_dir / info.file
    raw = path.read_bytes()  # FileNotFoundError: replaced since the manifest was read (retry)
    if hashlib.sha256(raw).hexdigest() != info.sha256:
        raise StoreError(f"{path}: index is damaged (sha256 differs from the manifest); {REPAIR}")
    try:
        with h5py.File(io.BytesIO(raw), "r") as f:
            named = _text(f["pieces"][()])
            columns = {
                name: f[name][()]
                for name in ("piece", "row", "ids", "paths", "labels", "splits", "sizes", "mtime_ns", "live")
            }
            label_names = tuple(_text(f["label_names"][()]))
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"{path}: index is damaged or unreadable ({exc}); {REPAIR}") from None
    if named != [p.file for p in pieces[: info.pieces]]:
        raise StoreError(f"{path}: index names other pieces than the manifest; {REPAIR}")
    paths = columns["paths"].tobytes().decode("utf-8").split("\0") if len(columns["piece"]) else []
    rows = Rows(
        piece=columns["piece"].astype(np.int32, copy=False),
        row=columns["row"].astype(np.int32, copy=False),
        ids=columns["ids"].reshape(-1, 32),
        paths=np.array(paths, dtype=object),
        labels=columns["labels"].astype(np.int32, copy=False),
        label_names=label_names,
        splits=columns["splits"].astype(np.int8, copy=False),
        sizes=columns["sizes"],
        mtime_ns=columns["mtime_ns"],
    )
    if len(rows.paths) != len(rows) or len(rows) != info.rows:
        raise StoreError(f"{path}: index is damaged (row counts disagree); {REPAIR}")
    return rows, columns["live"].astype(bool)


REPAIR = "run `featurestore extract` on the store to rebuild the index"


def load_rows(store_dir: Path, manifest: Manifest) -> tuple[Rows, np.ndarray]:
    """(rows, live mask) of every committed row: the index, then the pieces after it."""
    parts, live_parts = [], []
    covered = 0
    if manifest.index is not None:
        rows, live = read_index(store_dir, manifest.index, manifest.pieces)
        parts.append(rows)
        live_parts.append(live)
        covered = manifest.index.pieces
    tail = [read_piece_rows(store_dir / p.file, i) for i, p in enumerate(manifest.pieces) if i >= covered]
    rows = concat_rows([*parts, *tail])
    known_live = np.concatenate(live_parts) if live_parts else np.zeros(0, bool)
    return rows, live_mask(rows, known_live, manifest)


def live_mask(rows: Rows, known_live: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Which rows are live: the index's mask for the rows it covers, then the tail's newest row
    of each path wins and the manifest's `deleted` hides rows older than the deletion.

    Vectorised when nothing was committed after the index; one set lookup per row otherwise.
    """
    covered = len(known_live)
    live = np.zeros(len(rows), bool)
    live[:covered] = known_live
    tail_paths = rows.paths[covered:].tolist()
    deleted = manifest.deleted
    if not tail_paths and not deleted:
        return live
    generation = np.array([p.generation for p in manifest.pieces], np.int64)
    newest: dict[str, int] = {}
    for at, path in enumerate(tail_paths, start=covered):
        newest[path] = at
    for path, at in newest.items():
        live[at] = generation[rows.piece[at]] > deleted.get(path, -1)
    if covered:
        gone = newest.keys() | deleted.keys()
        index_paths = rows.paths[:covered].tolist()
        live[:covered] &= ~np.fromiter((p in gone for p in index_paths), bool, covered)
    return live


def remove_unnamed_indexes(store_dir: Path, keep: IndexInfo | None) -> None:
    """Delete index files the manifest does not name (replaced ones, a crash's leftovers)."""
    folder = store_dir / INDEX
    if not folder.is_dir():
        return
    keep_name = os.path.basename(keep.file) if keep else None
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name != keep_name:
                os.unlink(entry.path)
