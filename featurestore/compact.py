"""Compaction: rewrite the live rows of small or dirty pieces into few large ones.

Nightly runs leave many small pieces and rows that later runs superseded or deleted. Compaction
rewrites the live rows of those pieces into pieces of about `TARGET_PIECE_BYTES` and commits
them with the writer's discipline (lock, temp, fsync, rename, one atomic manifest), so a kill at
any instant leaves the last commit. The pieces it replaces are retired, not deleted: readers that
opened the store before keep reading them until the retention passes (like Delta Lake's VACUUM).
`extract` compacts by itself when `compaction_due` says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np

from featurestore.format import PieceInfo, StoreError, map_datasets
from featurestore.index import Rows, concat_rows, read_piece_rows, write_index
from featurestore.piece_maps import read_all
from featurestore.store import FeatureStore
from featurestore.writer import DEFAULT_RETAIN_SECONDS, PieceColumns, StoreWriter

TARGET_PIECE_BYTES = 128 * 2**20  # maps per compacted piece: long sequential reads, bounded memory
MIN_PIECE_ROWS, MAX_PIECE_ROWS = 512, 65536
DIRTY_FRACTION = 0.10  # a piece with this share of dead rows is rewritten
DUE_DEAD_FRACTION = 0.20  # extract compacts when this share of the stored rows is dead ...
DUE_SMALL_PIECES = 64  # ... or this many pieces are small (under half the target)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompactSummary:
    pieces_before: int
    pieces_after: int
    rewritten_pieces: int
    new_pieces: int
    live_rows: int
    dropped_rows: int
    retained_until: str

    def line(self) -> str:
        if not self.rewritten_pieces:
            return f"nothing to compact ({self.pieces_before} pieces)"
        return (
            f"rewrote {self.rewritten_pieces} pieces into {self.new_pieces} ({self.live_rows} live rows "
            f"kept, {self.dropped_rows} dead rows dropped); {self.pieces_before} -> {self.pieces_after} "
            f"pieces; replaced pieces kept for readers until {self.retained_until}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Health:
    """How much compaction would gain: shown by `info`, used by `extract`'s policy."""

    pieces: int
    small_pieces: int
    rows_in_pieces: int
    dead_rows: int

    @property
    def dead_fraction(self) -> float:
        return self.dead_rows / self.rows_in_pieces if self.rows_in_pieces else 0.0

    @property
    def due(self) -> bool:
        return self.dead_fraction >= DUE_DEAD_FRACTION or self.small_pieces >= DUE_SMALL_PIECES


def target_rows(store: FeatureStore) -> int:
    """Rows of one compacted piece: about TARGET_PIECE_BYTES of maps."""
    if not store.manifest.pieces:
        return MIN_PIECE_ROWS
    with h5py.File(store.path / store.manifest.pieces[0].file, "r") as f:
        row_bytes = sum(
            int(np.prod(f[name].shape[1:])) * f[name].dtype.itemsize
            for name in map_datasets(store.fingerprint)
        )
    return int(np.clip(TARGET_PIECE_BYTES // max(row_bytes, 1), MIN_PIECE_ROWS, MAX_PIECE_ROWS))


def health(store: FeatureStore) -> Health:
    pieces = store.manifest.pieces
    rows_per_piece = np.array([p.rows for p in pieces], np.int64)
    small = int((rows_per_piece < target_rows(store) // 2).sum()) if len(pieces) else 0
    return Health(
        pieces=len(pieces),
        small_pieces=small,
        rows_in_pieces=int(rows_per_piece.sum()),
        dead_rows=int(len(store.rows) - store.live.sum()),
    )


def _chosen(store: FeatureStore, target: int) -> list[int]:
    """Pieces worth rewriting: small ones and dirty ones (a clean, large piece stays)."""
    live_per_piece = np.bincount(store.rows.piece[store.live], minlength=len(store.manifest.pieces))
    chosen = []
    for i, piece in enumerate(store.manifest.pieces):
        dead = 1 - live_per_piece[i] / piece.rows
        if piece.rows < target // 2 or dead >= DIRTY_FRACTION:
            chosen.append(i)
    if len(chosen) == 1 and live_per_piece[chosen[0]] == store.manifest.pieces[chosen[0]].rows:
        return []  # one small clean piece alone: rewriting it gains nothing
    return chosen


def compact_writer(writer: StoreWriter) -> CompactSummary:
    """Compact the store `writer` holds (its lock and its last commit)."""
    assert writer.manifest is not None, "use StoreWriter as a context manager"
    store = FeatureStore(writer.path, writer.manifest)
    manifest = store.manifest
    target = target_rows(store)
    chosen = _chosen(store, target)
    written: list[PieceInfo] = []
    pending: list[PieceColumns] = []
    live_rows = 0
    for piece in chosen:
        part = _live_columns_of(store, piece)
        if part is None:
            continue
        pending.append(part)
        live_rows += len(part)
        if sum(len(p) for p in pending) >= target:
            written.append(writer.write_piece_columns(_joined(pending), contiguous=True))
            pending = []
    if pending:
        written.append(writer.write_piece_columns(_joined(pending), contiguous=True))
    dropped = sum(manifest.pieces[i].rows for i in chosen) - live_rows
    generation = manifest.generation + 1
    replaced = set(chosen)
    kept = tuple(p for i, p in enumerate(manifest.pieces) if i not in replaced)
    new = tuple(dataclasses.replace(p, generation=generation) for p in written)
    if chosen:
        # Rewritten rows are their paths' newest and live: after every kept piece, they stay so.
        # The kept rows keep their live mask (deletions folded into the old index included).
        pieces = (*kept, *new)
        rows, live = _index_after(
            store,
            kept_numbers=[i for i in range(len(manifest.pieces)) if i not in replaced],
            new=new,
            first_new=len(kept),
        )
        info = write_index(writer.path, rows, live, pieces, generation)
        committed = writer.publish(
            dataclasses.replace(manifest, generation=generation, pieces=pieces, index=info, deleted={})
        )
    else:
        committed = writer.publish(manifest, index=True)
    until = max((r.until for r in committed.retired), default="")
    return CompactSummary(
        pieces_before=len(manifest.pieces),
        pieces_after=len(committed.pieces),
        rewritten_pieces=len(chosen),
        new_pieces=len(written),
        live_rows=live_rows,
        dropped_rows=dropped,
        retained_until=until,
    )


def _index_after(
    store: FeatureStore, *, kept_numbers: list[int], new: tuple[PieceInfo, ...], first_new: int
) -> tuple[Rows, np.ndarray]:
    """The index rows of the compacted store: the kept pieces' rows (renumbered, same live
    mask), then the new pieces' rows, all live."""
    renumber = np.full(len(store.manifest.pieces), -1, np.int32)
    renumber[kept_numbers] = np.arange(len(kept_numbers), dtype=np.int32)
    keep = renumber[store.rows.piece] >= 0
    old = store.rows
    kept_rows = Rows(
        piece=renumber[old.piece[keep]],
        row=old.row[keep],
        ids=old.ids[keep],
        paths=old.paths[keep],
        labels=old.labels[keep],
        label_names=old.label_names,
        splits=old.splits[keep],
        sizes=old.sizes[keep],
        mtime_ns=old.mtime_ns[keep],
    )
    new_rows = [read_piece_rows(store.path / p.file, first_new + k) for k, p in enumerate(new)]
    rows = concat_rows([kept_rows, *new_rows])
    live = np.concatenate([store.live[keep], np.ones(sum(p.rows for p in new), bool)])
    return rows, live


def _live_columns_of(store: FeatureStore, piece: int) -> PieceColumns | None:
    """The live rows of one piece with their maps, read in one go per dataset."""
    info = store.manifest.pieces[piece]
    lo = int(np.searchsorted(store.rows.piece, piece))
    at = np.flatnonzero(store.live[lo : lo + info.rows])
    if not len(at):
        return None
    path = store.path / info.file
    try:
        with h5py.File(path, "r") as f:
            maps = {name: read_all(f, name)[at] for name in map_datasets(store.fingerprint)}
    except (OSError, KeyError) as exc:
        raise StoreError(
            f"{path}: cannot be read, the piece is damaged ({exc}); "
            "run `featurestore extract --repair` first to recompute its rows"
        ) from None
    rows, chosen = store.rows, lo + at
    return PieceColumns(
        ids=rows.ids_hex(chosen),
        paths=rows.paths[chosen].tolist(),
        labels=rows.label_strings(chosen).tolist(),
        splits=rows.split_strings(chosen).tolist(),
        sizes=rows.sizes[chosen],
        mtime_ns=rows.mtime_ns[chosen],
        maps=maps,
    )


def _joined(parts: list[PieceColumns]) -> PieceColumns:
    if len(parts) == 1:
        return parts[0]
    return PieceColumns(
        ids=[v for p in parts for v in p.ids],
        paths=[v for p in parts for v in p.paths],
        labels=[v for p in parts for v in p.labels],
        splits=[v for p in parts for v in p.splits],
        sizes=np.concatenate([p.sizes for p in parts]),
        mtime_ns=np.concatenate([p.mtime_ns for p in parts]),
        maps={name: np.concatenate([p.maps[name] for p in parts]) for name in parts[0].maps},
    )


def compact_store(path: str | Path, *, retain_seconds: float = DEFAULT_RETAIN_SECONDS) -> CompactSummary:
    """Take the store's lock and compact it (see the module docstring)."""
    from featurestore.format import read_manifest

    store_dir = Path(path)
    manifest = read_manifest(store_dir)  # refuse a folder that is no store before locking it
    with StoreWriter(
        store_dir,
        fingerprint=manifest.fingerprint,
        split_fractions=manifest.split_fractions,
        source_root=manifest.source_root,
        class_names=manifest.class_names,
        retain_seconds=retain_seconds,
    ) as writer:
        return compact_writer(writer)


def drop_pieces(writer: StoreWriter, files: set[str]) -> int:
    """Commit the store without the pieces named `files` (damaged ones): their live rows leave
    the live view, so the next extraction recomputes them. Returns the number of rows dropped."""
    assert writer.manifest is not None
    store = FeatureStore(writer.path, writer.manifest)
    manifest = store.manifest
    numbers = [i for i, p in enumerate(manifest.pieces) if p.file not in files]
    if len(numbers) == len(manifest.pieces):
        return 0
    generation = manifest.generation + 1
    pieces = tuple(manifest.pieces[i] for i in numbers)
    rows, live = _index_after(store, kept_numbers=numbers, new=(), first_new=len(numbers))
    info = write_index(writer.path, rows, live, pieces, generation)
    dropped = int(store.live.sum() - live.sum())
    writer.publish(
        dataclasses.replace(manifest, generation=generation, pieces=pieces, index=info, deleted={})
    )
    return dropped


def maybe_compact(writer: StoreWriter) -> CompactSummary | None:
    """Compact when the store's health says it is due (extract's automatic policy)."""
    assert writer.manifest is not None
    if not health(FeatureStore(writer.path, writer.manifest)).due:
        return None
    return compact_writer(writer)
