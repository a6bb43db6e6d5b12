"""The read API of a store: a view of its last commit, loaded as numpy arrays.

A store is a folder (layout in docs/store-format.md and `featurestore.format`): immutable HDF5
pieces named by an atomically replaced manifest. A reader that opens the manifest sees exactly
the pieces committed at that instant; later commits are seen by opening again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featurestore.fingerprint import Fingerprint
from featurestore.format import (
    COLUMNS,
    MAIN_MAPS,
    TEXT_COLUMNS,
    Manifest,
    PieceInfo,
    StoreError,
    is_store,
    map_dataset,
    map_datasets,
    read_manifest,
)
from featurestore.splits import SPLITS, SplitFractions
from featurestore.vgg16 import output_shape

__all__ = ["FeatureSet", "FeatureStore", "StoreError", "StoredImage", "is_store", "open_store"]


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


@dataclasses.dataclass(frozen=True)
class _PieceIndex:
    """The small columns of one piece and which of its rows are live."""

    info: PieceInfo
    columns: dict[str, np.ndarray]
    live: np.ndarray  # bool per row


@dataclasses.dataclass(frozen=True)
class StoredImage:
    """One live row's image: where it is, what it is, where it goes."""

    path: Path  # absolute: the source root joined with relpath
    relpath: str
    label: str  # "" when unlabeled
    image_id: str  # sha256 of the file's bytes when it was extracted
    split: str


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        columns = {name: f[name][()] for name in COLUMNS}
    for name in TEXT_COLUMNS:
        columns[name] = np.array([v.decode("utf-8") for v in columns[name]], dtype=object)
    return columns


class FeatureStore:
    """A read-only view of a store's last commit.

    Open it with `open_store`. Later commits by a running writer are not seen; open again to
    see them. Reads whole contiguous slices per piece (rows are sorted by split), never
    per-row fancy indexing, so a split reads at disk speed.
    """

    def __init__(self, store_dir: Path, manifest: Manifest) -> None:
        self.path = store_dir
        self.manifest = manifest
        self._pieces = self._index(manifest)

    def _index(self, manifest: Manifest) -> list[_PieceIndex]:
        pieces = []
        for info in manifest.pieces:
            piece_path = self.path / info.file
            try:
                columns = _read_columns(piece_path)
            except (OSError, KeyError) as exc:
                raise StoreError(f"{piece_path}: committed piece cannot be read ({exc})") from None
            pieces.append(_PieceIndex(info, columns, np.zeros(info.rows, dtype=bool)))
        # A path is live in its newest row, unless it was deleted after that row was written.
        newest: dict[str, tuple[int, int]] = {}
        for p, piece in enumerate(pieces):
            for r, relpath in enumerate(piece.columns["paths"]):
                newest[relpath] = (p, r)
        for relpath, (p, r) in newest.items():
            if pieces[p].info.generation > manifest.deleted.get(relpath, -1):
                pieces[p].live[r] = True
        return pieces

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
        return int(sum(p.live.sum() for p in self._pieces))

    def live_rows(self) -> Iterator[dict[str, Any]]:
        """The small columns of every live row (no feature maps)."""
        for piece in self._pieces:
            for r in np.flatnonzero(piece.live):
                yield {name: piece.columns[name][r] for name in COLUMNS}

    def images(self, split: str | Sequence[str] | None = None) -> list[StoredImage]:
        """The live rows' images of one split, several, or all (None), in store order."""
        wanted = set(self._check_splits(split))
        root = self.source_root
        return [
            StoredImage(
                path=root / row["paths"],
                relpath=row["paths"],
                label=row["labels"],
                image_id=row["ids"],
                split=row["splits"],
            )
            for row in self.live_rows()
            if row["splits"] in wanted
        ]

    def image_paths(self, split: str | Sequence[str] | None = None) -> list[Path]:
        """Absolute paths of the live rows' images (see `images`)."""
        return [image.path for image in self.images(split)]

    @property
    def digest(self) -> str:
        """sha256 naming the live content: fingerprint, splits and the sorted (id, label) rows."""
        h = hashlib.sha256(self.fingerprint.digest.encode())
        h.update(json.dumps(self.manifest.split_fractions.to_dict(), sort_keys=True).encode())
        for image_id, label in sorted((row["ids"], row["labels"]) for row in self.live_rows()):
            h.update(f"{image_id}\t{label}\n".encode())
        return h.hexdigest()

    def counts(self) -> dict[str, dict[str, int]]:
        """Live rows per split and label ('' is unlabeled)."""
        counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
        for row in self.live_rows():
            per_label = counts[row["splits"]]
            per_label[row["labels"]] = per_label.get(row["labels"], 0) + 1
        return counts

    # -- feature reads --------------------------------------------------------------------
    def _dataset_name(self, layer: str | None, flipped: bool) -> str:
        layer = layer or self.fingerprint.layer
        if layer not in self.layers:
            raise StoreError(f"{self.path}: no maps for layer {layer!r} (has {list(self.layers)})")
        if flipped and not self.fingerprint.flip_views:
            raise StoreError(f"{self.path}: extracted without flipped views (--flip-views)")
        return map_dataset(layer, main_layer=self.fingerprint.layer, flipped=flipped)

    def map_shape(self, layer: str | None = None, *, flipped: bool = False) -> tuple[int, ...]:
        """(H, W, C) of one layer's maps, as stored (the main layer's by default)."""
        return self._shape_of(self._dataset_name(layer, flipped))

    def _selections(self, splits: Sequence[str]) -> Iterator[tuple[_PieceIndex, int, int, np.ndarray]]:
        """(piece, start, stop, live mask within [start, stop)) for each contiguous split run."""
        for piece in self._pieces:
            piece_splits = piece.columns["splits"]
            for split in splits:
                rows = np.flatnonzero(piece_splits == split)
                if len(rows) == 0:
                    continue
                start, stop = int(rows[0]), int(rows[-1]) + 1
                mask = piece.live[start:stop] & (piece_splits[start:stop] == split)
                if mask.any():
                    yield piece, start, stop, mask

    def load(
        self, split: str | Sequence[str] | None = None, *, layer: str | None = None, flipped: bool = False
    ) -> FeatureSet:
        """Load the live rows of one split, several, or all (None) as numpy arrays."""
        splits = self._check_splits(split)
        return self._read(list(self._selections(splits)), self._dataset_name(layer, flipped))

    def iter_batches(
        self,
        split: str | Sequence[str] | None = None,
        *,
        batch_size: int = 4096,
        layer: str | None = None,
        flipped: bool = False,
    ) -> Iterator[FeatureSet]:
        """Yield the rows in batches of at most `batch_size`, for data larger than memory."""
        name = self._dataset_name(layer, flipped)
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

    def _open_piece(self, info: PieceInfo) -> h5py.File:
        """A committed piece of this view, open for reading; a piece that a rebuild deleted
        since this view was opened is a one-line `StoreError`."""
        path = self.path / info.file
        try:
            return h5py.File(path, "r")
        except OSError as exc:
            if not path.exists():
                raise StoreError(
                    f"{path}: gone since this reader opened the store (rebuilt meanwhile?); open it again"
                ) from None
            raise StoreError(f"{path}: committed piece cannot be read ({exc})") from None

    def _read(self, selections: list[tuple[_PieceIndex, int, int, np.ndarray]], name: str) -> FeatureSet:
        shape = self._shape_of(name)
        total = sum(int(mask.sum()) for *_, mask in selections)
        features = np.empty((total, *shape), dtype=np.float32)
        parts: dict[str, list[np.ndarray]] = {c: [] for c in ("ids", "paths", "labels", "splits")}
        at = 0
        for piece, start, stop, mask in selections:
            with self._open_piece(piece.info) as f:
                block = f[name][start:stop]  # one contiguous read
            n = int(mask.sum())
            features[at : at + n] = block if n == stop - start else block[mask]
            at += n
            for column, values in parts.items():
                values.append(piece.columns[column][start:stop][mask])
        label_index = {name: i for i, name in enumerate(self.class_names)}
        labels = np.concatenate(parts["labels"]) if parts["labels"] else np.array([], dtype=object)
        return FeatureSet(
            features=features,
            labels=np.array([label_index.get(label, -1) for label in labels], dtype=np.int64),
            ids=_concat(parts["ids"]),
            paths=_concat(parts["paths"]),
            splits=_concat(parts["splits"]),
            class_names=self.class_names,
        )

    def _shape_of(self, name: str) -> tuple[int, ...]:
        """The shape the pieces hold; VGG16's geometry for a store with no rows yet."""
        for piece in self._pieces:
            with self._open_piece(piece.info) as f:
                return tuple(f[name].shape[1:])
        layer = name.removeprefix("flipped/").removeprefix("layers/")
        return output_shape(
            self.fingerprint.layer if layer == MAIN_MAPS else layer, self.fingerprint.input_size
        )

    def maps_of_id(self, image_id: str) -> dict[str, np.ndarray] | None:
        """Every map stored for an image id (any row, live or not), or None if unknown."""
        for piece in reversed(self._pieces):
            rows = np.flatnonzero(piece.columns["ids"] == image_id)
            if len(rows):
                with self._open_piece(piece.info) as f:
                    return {name: f[name][int(rows[0])] for name in map_datasets(self.fingerprint)}
        return None


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.array([], dtype=object)


def open_store(path: str | Path) -> FeatureStore:
    """Open a store read-only at its last commit; StoreError with a clear reason otherwise."""
    store_dir = Path(path)
    return FeatureStore(store_dir, read_manifest(store_dir))
