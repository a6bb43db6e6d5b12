"""The feature store on disk, and its read API.

A store is a folder (layout in docs/store-format.md):

    STORE/manifest.json      the one source of truth, replaced atomically on every commit
    STORE/pieces/*.h5        immutable HDF5 files of rows, each listed in the manifest
    STORE/.tmp/              pieces being written (a crash leaves them; the next writer deletes them)
    STORE/.lock              held by the one writer

HDF5 is not crash-safe for a file being appended to, so nothing is ever appended: a piece is
written whole under a temporary name, fsynced and renamed, and only then named in a new
manifest. A reader that opens the manifest sees exactly the pieces committed at that instant.
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
from featurestore.splits import SPLITS, SplitFractions

FORMAT = "featurestore.store/1"
MANIFEST = "manifest.json"
PIECES = "pieces"
MAIN_MAPS = "features"
COLUMNS = ("ids", "paths", "labels", "splits", "sizes", "mtime_ns")


class StoreError(Exception):
    """A store that cannot be opened or used; the message names the store and the reason."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PieceInfo:
    file: str
    rows: int
    sha256: str
    generation: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    generation: int
    fingerprint: Fingerprint
    class_names: tuple[str, ...]
    source_root: str
    split_fractions: SplitFractions
    pieces: tuple[PieceInfo, ...] = ()
    deleted: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    updated: str = ""

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT,
            "generation": self.generation,
            "fingerprint": self.fingerprint.to_dict(),
            "fingerprint_digest": self.fingerprint.digest,
            "class_names": list(self.class_names),
            "source_root": self.source_root,
            "split_fractions": self.split_fractions.to_dict(),
            "pieces": [dataclasses.asdict(p) for p in self.pieces],
            "deleted": self.deleted,
            "failures": self.failures,
            "updated": self.updated,
        }
        return json.dumps(data, indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes, origin: Path) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}, expected {FORMAT}")
            return cls(
                generation=int(data["generation"]),
                fingerprint=Fingerprint.from_dict(data["fingerprint"]),
                class_names=tuple(data["class_names"]),
                source_root=data["source_root"],
                split_fractions=SplitFractions(**data["split_fractions"]),
                pieces=tuple(PieceInfo(**p) for p in data["pieces"]),
                deleted=dict(data.get("deleted", {})),
                failures=dict(data.get("failures", {})),
                updated=data.get("updated", ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{origin}: not a valid featurestore manifest ({exc})") from None


def read_manifest(store_dir: Path) -> Manifest:
    path = store_dir / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{store_dir}: not a feature store (no {MANIFEST})") from None
    return Manifest.from_json(raw, path)


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


def read_columns(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        columns = {name: f[name][()] for name in COLUMNS}
    for name in ("ids", "paths", "labels", "splits"):
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
                columns = read_columns(piece_path)
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
    def failures(self) -> dict[str, dict[str, Any]]:
        return self.manifest.failures

    @property
    def layers(self) -> tuple[str, ...]:
        """Layers whose maps the store holds; the first is the main one (`features`)."""
        return (self.fingerprint.layer, *self.fingerprint.extra_layers)

    def __len__(self) -> int:
        return int(sum(p.live.sum() for p in self._pieces))

    def live_rows(self) -> Iterator[dict[str, Any]]:
        """The small columns of every live row (no feature maps)."""
        for piece in self._pieces:
            for r in np.flatnonzero(piece.live):
                yield {name: piece.columns[name][r] for name in COLUMNS}

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
        name = MAIN_MAPS if layer == self.fingerprint.layer else f"layers/{layer}"
        return f"flipped/{name}" if flipped else name

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

    def _read(self, selections: list[tuple[_PieceIndex, int, int, np.ndarray]], name: str) -> FeatureSet:
        shape = self._map_shape(name)
        total = sum(int(mask.sum()) for *_, mask in selections)
        features = np.empty((total, *shape), dtype=np.float32)
        parts: dict[str, list[np.ndarray]] = {c: [] for c in ("ids", "paths", "labels", "splits")}
        at = 0
        for piece, start, stop, mask in selections:
            with h5py.File(self.path / piece.info.file, "r") as f:
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

    def _map_shape(self, name: str) -> tuple[int, ...]:
        for piece in self._pieces:
            with h5py.File(self.path / piece.info.file, "r") as f:
                return tuple(f[name].shape[1:])
        layer = self.fingerprint.layer if name.endswith(MAIN_MAPS) else name.rsplit("/", 1)[-1]
        return vgg16_map_shape(layer, self.fingerprint.input_size)

    def maps_of_id(self, image_id: str) -> dict[str, np.ndarray] | None:
        """Every map stored for an image id (any row, live or not), or None if unknown."""
        for piece in reversed(self._pieces):
            rows = np.flatnonzero(piece.columns["ids"] == image_id)
            if len(rows):
                with h5py.File(self.path / piece.info.file, "r") as f:
                    return {name: f[name][int(rows[0])] for name in _map_datasets(f)}
        return None


def _map_datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return [name for name in names if name not in COLUMNS]


def vgg16_map_shape(layer: str, input_size: int) -> tuple[int, int, int]:
    """(H, W, C) of a VGG16 `blockN_pool` map: each block halves the size (floor)."""
    block = int(layer.removeprefix("block")[0])
    size = input_size
    for _ in range(block):
        size //= 2
    return (size, size, (64, 128, 256, 512, 512)[block - 1])


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.array([], dtype=object)


def open_store(path: str | Path) -> FeatureStore:
    """Open a store read-only at its last commit; StoreError with a clear reason otherwise."""
    store_dir = Path(path)
    return FeatureStore(store_dir, read_manifest(store_dir))
