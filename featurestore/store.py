"""The read API of a store: a view of its last commit, loaded as numpy arrays.

A store is a folder (layout in docs/store-format.md and `featurestore.format`): immutable HDF5
pieces named by an atomically replaced manifest. A reader that opens the manifest sees exactly
the pieces committed at that instant; later commits are seen by opening again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from featurestore.fingerprint import Fingerprint
from featurestore.format import (
    COLUMNS,
    Manifest,
    StoreError,
    dataset_layer,
    is_store,
    map_dataset,
    map_datasets,
    read_manifest,
)
from featurestore.index import Rows, load_rows
from featurestore.piece_maps import block_rows, read_rows
from featurestore.splits import SPLITS, SplitFractions
from featurestore.vgg16 import output_shape

__all__ = ["FeatureSet", "FeatureStore", "LiveIds", "StoreError", "StoredImage", "is_store", "open_store"]


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Rows of a store as numpy arrays; labels index `class_names` (-1: unlabeled)."""

    features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    paths: np.ndarray
    splits: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


class StoredImage(NamedTuple):
    """One live row's image: where it is, what it is, where it goes. A tuple of strings (a
    million are made in a fraction of a second); `path` is built when asked for."""

    relpath: str
    label: str  # "" when unlabeled
    image_id: str  # sha256 of the file's bytes when it was extracted
    split: str
    root: str  # the store's source root

    @property
    def path(self) -> Path:
        """Absolute: the source root joined with relpath."""
        return Path(os.path.join(self.root, self.relpath))


#: Bytes of the buffer a split read with dead rows between its live ones reads through (a
#: power of two: with power-of-two rows its blocks start on the 1 MiB chunks' boundaries).
MASKED_READ_BYTES = 32 << 20

#: Pieces `maps_of_id` keeps open (read-only handles; a piece never changes once committed).
OPEN_PIECES = 4

# (piece number, start row, stop row, live mask within [start, stop)) of one contiguous read
_Selection = tuple[int, int, int, np.ndarray]


class FeatureStore:
    """A read-only view of a store's last commit.

    Open it with `open_store`. Later commits by a running writer are not seen; open again to
    see them. Opening reads the index (`featurestore.index`): the small columns of every row
    as numpy arrays, `rows` and `live`. Reads whole contiguous slices per piece (rows are
    sorted by split), never per-row fancy indexing, so a split reads at disk speed.
    """

    def __init__(self, store_dir: Path, manifest: Manifest) -> None:
        self.path = Path(store_dir)
        self.manifest = manifest
        #: every committed row's small columns, in piece order, and which of them are live
        self.rows, self.live = load_rows(self.path, manifest)
        self._starts = np.searchsorted(self.rows.piece, np.arange(len(manifest.pieces) + 1))
        self._by_id: dict[bytes, int] | None = None
        self._handles: dict[int, h5py.File] = {}  # open pieces for maps_of_id, oldest first

    # -- metadata -----------------------------------------------------------------------
    @property
    def fingerprint(self) -> Fingerprint:
        return self.manifest.fingerprint

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def split_fractions(self) -> SplitFractions:
        return self.manifest.split_fractions

    @property
    def source_root(self) -> Path:
        """The folder the stored relative paths are relative to."""
        return Path(self.manifest.source_root)

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def failures(self) -> dict[str, dict[str, Any]]:
        return self.manifest.failures

    @property
    def layers(self) -> tuple[str, ...]:
        """Layers whose maps the store holds; the first is the main one (`features`)."""
        return self.fingerprint.layers

    def __len__(self) -> int:
        return int(self.live.sum())

    def live_rows(self) -> Iterator[dict[str, Any]]:
        """The small columns of every live row (no feature maps), one dict a row.

        For many rows prefer the arrays `rows` and `live`: this builds one dict per row.
        """
        at = np.flatnonzero(self.live)
        rows = self.rows
        yield from (
            dict(zip(COLUMNS, values, strict=True))
            for values in zip(
                rows.ids_hex(at),
                rows.paths[at].tolist(),
                rows.label_strings(at).tolist(),
                rows.split_strings(at).tolist(),
                rows.sizes[at].tolist(),
                rows.mtime_ns[at].tolist(),
                strict=True,
            )
        )

    def images(self, split: str | Sequence[str] | None = None) -> list[StoredImage]:
        """The live rows' images of one split, several, or all (None), in store order."""
        codes = [SPLITS.index(name) for name in self._check_splits(split)]
        at = np.flatnonzero(self.live & np.isin(self.rows.splits, codes))
        root = self.manifest.source_root
        rows = self.rows
        return [
            StoredImage(relpath, label, image_id, name, root)
            for relpath, label, image_id, name in zip(
                rows.paths[at].tolist(),
                rows.label_strings(at).tolist(),
                rows.ids_hex(at),
                rows.split_strings(at).tolist(),
                strict=True,
            )
        ]

    def live_ids(self) -> set[str]:
        """The image ids of the live rows (no per-row objects beyond the strings)."""
        return set(self.rows.ids_hex(np.flatnonzero(self.live)))

    def live_ids_added_since(self, earlier: FeatureStore) -> set[str]:
        """Ids live here that were not live in `earlier`, an older view of the same store.

        Nothing when no commit came between them; otherwise only live rows of pieces committed
        since are candidates (pieces never change), checked against `earlier`'s live ids.
        """
        if self.generation == earlier.generation or not len(self.rows):
            return set()
        old_files = {piece.file for piece in earlier.manifest.pieces}
        new_piece = np.array([piece.file not in old_files for piece in self.manifest.pieces], bool)
        at = np.flatnonzero(self.live & new_piece[self.rows.piece])
        if not at.size:
            return set()
        earlier_ids = set(_as_bytes(earlier.rows.ids[earlier.live]))
        added = np.fromiter((i not in earlier_ids for i in _as_bytes(self.rows.ids[at])), bool, at.size)
        return set(self.rows.ids_hex(at[added]))

    def live_id_lookup(self) -> LiveIds:
        """The live rows' ids by relpath, and a set of ids that grows (see `LiveIds`)."""
        return LiveIds(self.rows, self.live)

    def live_ids_by_path(self) -> dict[str, str]:
        """{relpath: image id} of the live rows."""
        at = np.flatnonzero(self.live)
        return dict(zip(self.rows.paths[at].tolist(), self.rows.ids_hex(at), strict=True))

    def image_paths(self, split: str | Sequence[str] | None = None) -> list[Path]:
        """Absolute paths of the live rows' images (see `images`)."""
        return [image.path for image in self.images(split)]

    @property
    def digest(self) -> str:
        """sha256 naming the live content: fingerprint, splits and the sorted (id, label) rows."""
        h = hashlib.sha256(self.fingerprint.digest.encode())
        h.update(json.dumps(self.manifest.split_fractions.to_dict(), sort_keys=True).encode())
        at = np.flatnonzero(self.live)
        rows = self.rows
        names = rows.label_names
        rank = np.argsort(np.argsort(np.array(names, dtype=object))) if names else np.zeros(0, np.int64)
        keys = rows.ids[at].view("S32").ravel()
        order = at[np.lexsort((rank[rows.labels[at]], keys))] if len(at) else at
        labels = rows.label_strings(order).tolist()
        lines = (
            f"{image_id}\t{label}\n" for image_id, label in zip(rows.ids_hex(order), labels, strict=True)
        )
        h.update("".join(lines).encode())
        return h.hexdigest()

    def counts(self) -> dict[str, dict[str, int]]:
        """Live rows per split and label ('' is unlabeled)."""
        rows = self.rows
        n_labels = max(len(rows.label_names), 1)
        at = self.live
        per = np.bincount(
            rows.splits[at].astype(np.int64) * n_labels + rows.labels[at], minlength=len(SPLITS) * n_labels
        )
        counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
        for s, split in enumerate(SPLITS):
            for label_code, label in enumerate(rows.label_names):
                if per[s * n_labels + label_code]:
                    counts[split][label] = int(per[s * n_labels + label_code])
        return counts

    # -- feature reads --------------------------------------------------------------------
    def _dataset_name(self, layer: str | None, flipped: bool, view: int = 0) -> str:
        layer = layer or self.fingerprint.layer
        if layer not in self.layers:
            raise StoreError(f"{self.path}: no maps for layer {layer!r} (has {list(self.layers)})")
        if flipped and not self.fingerprint.flip_views:
            raise StoreError(f"{self.path}: extracted without flipped views (--flip-views)")
        if flipped and view:
            raise StoreError(f"{self.path}: read the flipped image's maps or view {view}'s, not both")
        if not 0 <= view <= self.fingerprint.views:
            raise StoreError(
                f"{self.path}: no augmented view {view} (extracted with --views {self.fingerprint.views})"
            )
        return map_dataset(layer, main_layer=self.fingerprint.layer, flipped=flipped, view=view)

    @property
    def views(self) -> int:
        """Cached augmented views per image (`extract --views K`); view 0 is the image itself."""
        return self.fingerprint.views

    def map_shape(self, layer: str | None = None, *, flipped: bool = False, view: int = 0) -> tuple[int, ...]:
        """(H, W, C) of one layer's maps, as stored (the main layer's by default)."""
        return self._shape_of(self._dataset_name(layer, flipped, view))

    def _selections(self, splits: Sequence[str]) -> Iterator[_Selection]:
        """(piece, start, stop, live mask within [start, stop)) for each contiguous split run."""
        rows = self.rows
        codes = [SPLITS.index(name) for name in splits]
        wanted = self.live & np.isin(rows.splits, codes)
        for piece in np.unique(rows.piece[wanted]).tolist():
            lo, hi = int(self._starts[piece]), int(self._starts[piece + 1])
            piece_splits = rows.splits[lo:hi]
            for code in codes:
                at = np.flatnonzero(piece_splits == code)
                if len(at) == 0:
                    continue
                start, stop = int(at[0]), int(at[-1]) + 1
                mask = wanted[lo + start : lo + stop] & (piece_splits[start:stop] == code)
                if mask.any():
                    yield piece, start, stop, mask

    def load(
        self,
        split: str | Sequence[str] | None = None,
        *,
        layer: str | None = None,
        flipped: bool = False,
        view: int = 0,
    ) -> FeatureSet:
        """Load the live rows of one split, several, or all (None) as numpy arrays: the maps of
        the image, of its mirror image (`flipped`), or of augmented view `view` (1..K), row for
        row in the same order."""
        splits = self._check_splits(split)
        return self._read(list(self._selections(splits)), self._dataset_name(layer, flipped, view))

    def iter_batches(
        self,
        split: str | Sequence[str] | None = None,
        *,
        batch_size: int = 4096,
        layer: str | None = None,
        flipped: bool = False,
        view: int = 0,
    ) -> Iterator[FeatureSet]:
        """Yield the rows in batches of at most `batch_size`, for data larger than memory."""
        name = self._dataset_name(layer, flipped, view)
        for piece, start, stop, mask in self._selections(self._check_splits(split)):
            for offset in range(start, stop, batch_size):
                end = min(offset + batch_size, stop)
                sub_mask = mask[offset - start : end - start]
                if sub_mask.any():
                    yield self._read([(piece, offset, end, sub_mask)], name)

    def _check_splits(self, split: str | Sequence[str] | None) -> list[str]:
        splits = list(SPLITS) if split is None else [split] if isinstance(split, str) else list(split)
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise StoreError(f"unknown split(s) {sorted(unknown)}; choose from {list(SPLITS)}")
        return splits

    def _piece_path(self, piece: int) -> Path:
        return self.path / self.manifest.pieces[piece].file

    def _read_maps(self, piece: int, name: str, rows: slice, out: np.ndarray) -> np.ndarray:
        """Rows of one piece's maps straight into `out`, checked (HDF5's fletcher32 or the
        piece's XXH3 digests, `featurestore.piece_maps`); damage is named, never served."""
        path = self._piece_path(piece)
        with _read_errors(path, name), h5py.File(path, "r") as f:
            start, stop, _ = rows.indices(f[name].shape[0])
            _prefetch(path, f[name], rows)
            return read_rows(f, name, start, stop, out)

    def _read(self, selections: list[_Selection], name: str) -> FeatureSet:
        shape = self._shape_of(name)
        total = sum(int(mask.sum()) for *_, mask in selections)
        features = np.empty((total, *shape), dtype=np.float32)
        picked = []
        at = 0
        buffer: np.ndarray | None = None
        for piece, start, stop, mask in selections:
            n = int(mask.sum())
            if n == stop - start:  # one contiguous read, straight into the result
                self._read_maps(piece, name, np.s_[start:stop], out=features[at : at + n])
            else:  # dead rows between: blocks through one reused buffer, live rows kept
                if buffer is None:
                    buffer = np.empty((self._masked_block_rows(shape), *shape), dtype=np.float32)
                self._read_masked(piece, name, start, stop, mask, buffer, features[at : at + n])
            at += n
            lo = int(self._starts[piece])
            picked.append(lo + start + np.flatnonzero(mask))
        rows = self.rows
        chosen = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        class_index = {name: i for i, name in enumerate(self.class_names)}
        label_lut = np.array([class_index.get(label, -1) for label in rows.label_names] or [-1], np.int64)
        return FeatureSet(
            features=features,
            labels=label_lut[rows.labels[chosen]] if len(chosen) else np.zeros(0, np.int64),
            ids=np.array(rows.ids_hex(chosen), dtype=object),
            paths=rows.paths[chosen],
            splits=rows.split_strings(chosen),
            class_names=self.class_names,
        )

    def _masked_block_rows(self, shape: tuple[int, ...]) -> int:
        """Rows of one masked-read block: about MASKED_READ_BYTES of float32, a whole number of a
        compacted piece's digest blocks (`piece_maps.block_rows` of the stored rows), so that no
        digest block is read and hashed by two masked blocks."""
        rows = max(1, MASKED_READ_BYTES // (4 * int(np.prod(shape))))
        stored = block_rows(int(np.prod(shape)) * np.dtype(self.fingerprint.dtype).itemsize)
        return rows - rows % stored if rows >= stored else rows

    def _read_masked(
        self,
        piece: int,
        name: str,
        start: int,
        stop: int,
        mask: np.ndarray,
        buffer: np.ndarray,
        out: np.ndarray,
    ) -> None:
        """The rows of [start, stop) where `mask` holds, into `out`: blocks aligned to the
        buffer's length read into `buffer` (no new memory a block, where slicing then indexing
        allocated the whole range twice) from the piece opened once; a block with no live row is
        not read."""
        block = len(buffer)
        at = 0
        path = self._piece_path(piece)
        with _read_errors(path, name), h5py.File(path, "r") as f:
            for lo in range(start - start % block, stop, block):
                lo, hi = max(lo, start), min(lo + block, stop)
                keep = mask[lo - start : hi - start]
                k = int(keep.sum())
                if not k:
                    continue
                _prefetch(path, f[name], np.s_[lo:hi])
                read_rows(f, name, lo, hi, buffer[: hi - lo])
                np.compress(keep, buffer[: hi - lo], axis=0, out=out[at : at + k])
                at += k

    def _shape_of(self, name: str) -> tuple[int, ...]:
        """The shape the pieces hold; VGG16's geometry for a store with no rows yet."""
        if self.manifest.pieces:
            path = self._piece_path(0)
            try:
                with h5py.File(path, "r") as f:
                    return tuple(f[name].shape[1:])
            except (OSError, KeyError) as exc:
                raise StoreError(f"{path}: committed piece cannot be read ({exc})") from None
        return output_shape(dataset_layer(name) or self.fingerprint.layer, self.fingerprint.input_size)

    def maps_of_id(self, image_id: str) -> dict[str, np.ndarray] | None:
        """Every map stored for an image id (any row, live or not), or None if unknown."""
        if self._by_id is None:  # built on first use (raw ids: no hex string per row); the
            # newest row of each id wins, as dict keeps the last value of a repeated key
            self._by_id = dict(zip(_as_bytes(self.rows.ids), range(len(self.rows)), strict=True))
        at = self._by_id.get(_raw_id(image_id))
        if at is None:
            return None
        piece, row = int(self.rows.piece[at]), int(self.rows.row[at])
        path = self._piece_path(piece)
        with _read_errors(path, "maps"):
            f = self._handle(piece)
            return {
                name: read_rows(f, name, row, row + 1, np.empty((1, *f[name].shape[1:]), f[name].dtype))[0]
                for name in map_datasets(self.fingerprint)
            }

    def _handle(self, piece: int) -> h5py.File:
        """An open piece for single-row reads, the last few kept open: a run that reuses the maps
        of thousands of known images opens each piece once, not once a row (~1 ms each)."""
        handle = self._handles.pop(piece, None)
        if handle is None:
            handle = h5py.File(self._piece_path(piece), "r")
            while len(self._handles) >= OPEN_PIECES:
                self._handles.pop(next(iter(self._handles))).close()
        self._handles[piece] = handle  # most recently used last
        return handle


@contextlib.contextmanager
def _read_errors(path: Path, name: str) -> Iterator[None]:
    """A missing or damaged piece as one StoreError naming it; its maps are never served."""
    try:
        yield
    except FileNotFoundError:
        raise StoreError(
            f"{path}: committed piece is missing (replaced since this reader opened the store? "
            "open it again; else run `featurestore verify`)"
        ) from None
    except (OSError, KeyError) as exc:
        raise StoreError(
            f"{path}: {name} cannot be read, the piece is damaged ({exc}); "
            "run `featurestore extract --repair` to recompute its rows"
        ) from None


def _prefetch(path: Path, dataset: h5py.Dataset, rows: slice) -> None:
    """Ask the kernel to read the bytes of `rows` ahead (posix_fadvise WILLNEED): HDF5 reads one
    chunk a call, and from a cold cache those reads would each wait for the disk; a contiguous
    dataset is one read, which the kernel then finds in its cache or in flight."""
    start, stop, _ = rows.indices(dataset.shape[0])
    if stop <= start or not hasattr(os, "posix_fadvise"):
        return
    chunk = dataset.chunks[0] if dataset.chunks else 0
    if chunk:
        if stop - start <= chunk:
            return
        try:
            first = dataset.id.get_chunk_info_by_coord((start // chunk * chunk, *[0] * (dataset.ndim - 1)))
            last = dataset.id.get_chunk_info_by_coord(
                ((stop - 1) // chunk * chunk, *[0] * (dataset.ndim - 1))
            )
        except (AttributeError, KeyError, ValueError, RuntimeError):  # an older HDF5: no chunk info
            return
        if first.byte_offset is None or last.byte_offset is None:
            return
        low = min(first.byte_offset, last.byte_offset)
        high = max(first.byte_offset + first.size, last.byte_offset + last.size)
    else:
        offset = dataset.id.get_offset()
        if offset is None:
            return
        row_bytes = int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize
        low, high = offset + start * row_bytes, offset + stop * row_bytes
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, low, high - low, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


class LiveIds:
    """What a run asks of the live rows' ids: the id of a relpath (`get`) and whether an id is
    known (``in``; `add` the ids committed since). Built from the index arrays in C-level passes:
    a hex string is made only for a relpath asked about, never one per stored row."""

    def __init__(self, rows: Rows, live: np.ndarray) -> None:
        at = np.flatnonzero(live)
        self._row_of = dict(zip(rows.paths[at].tolist(), at.tolist(), strict=True))
        self._ids = rows.ids
        self._known = set(_as_bytes(rows.ids[at]))

    def get(self, relpath: str, default: str | None = None) -> str | None:
        """The hex id of `relpath`'s live row, or `default`."""
        row = self._row_of.get(relpath)
        return default if row is None else self._ids[row].tobytes().hex()

    def __contains__(self, image_id: object) -> bool:
        raw = _raw_id(image_id)
        return raw is not None and raw in self._known

    def add(self, image_id: str) -> None:
        raw = _raw_id(image_id)
        if raw is not None:
            self._known.add(raw)


def _raw_id(image_id: object) -> bytes | None:
    """A hex id's 32 bytes; None for anything that is not one."""
    if not isinstance(image_id, str) or len(image_id) != 64:
        return None
    try:
        return bytes.fromhex(image_id)
    except ValueError:
        return None


def _as_bytes(ids: np.ndarray) -> list[bytes]:
    """Raw (n, 32) ids as n bytes objects: hashable, and made faster than hex strings."""
    return np.ascontiguousarray(ids).view(np.dtype((np.void, ids.shape[1]))).ravel().tolist()


def open_store(path: str | Path) -> FeatureStore:
    """Open a store read-only at its last commit; StoreError with a clear reason otherwise.

    A writer may replace the index between our reads of the manifest and of the index: then the
    manifest is read again (a few times), never a mix of two commits.
    """
    store_dir = Path(path)
    for _ in range(4):
        manifest = read_manifest(store_dir)
        try:
            return FeatureStore(store_dir, manifest)
        except FileNotFoundError:
            continue
    manifest = read_manifest(store_dir)
    return FeatureStore(store_dir, manifest)
