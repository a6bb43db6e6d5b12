"""Check a store: every committed piece present, intact and consistent with the manifest."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from featurestore.format import (
    COLUMNS,
    INDEX,
    PIECES,
    REBUILD_MANIFEST,
    TMP,
    Manifest,
    StoreError,
    map_datasets,
    read_manifest,
)
from featurestore.fsutil import file_sha256, stale_temps
from featurestore.index import read_index
from featurestore.piece_maps import read_all
from featurestore.runs import RUNS


def verify_store(path: str | Path) -> tuple[list[str], list[str]]:
    """Return (findings, notes). Any finding means the store is damaged.

    Checks each piece's sha256 against the manifest, reads every dataset in full (which checks
    HDF5's fletcher32 checksums, or the XXH3 digests of a compacted piece's maps), row counts, and
    NaN or negative features (ReLU maps are never negative). Notes are harmless: leftovers of a
    crash that the next run deletes.
    """
    store_dir = Path(path)
    manifest = read_manifest(store_dir)
    findings: list[str] = []
    for piece in manifest.pieces:
        piece_path = store_dir / piece.file
        if not piece_path.is_file():
            findings.append(f"{piece.file}: missing")
            continue
        if file_sha256(piece_path) != piece.sha256:
            findings.append(f"{piece.file}: sha256 differs from the manifest")
        try:
            problems = _check_piece(piece_path, piece.rows, map_datasets(manifest.fingerprint))
            findings.extend(f"{piece.file}: {problem}" for problem in problems)
        except (OSError, KeyError) as exc:
            findings.append(f"{piece.file}: cannot be read ({exc})")
    findings.extend(_check_index(store_dir, manifest))
    # Retired pieces are named too: kept for readers opened before they were replaced.
    named = {Path(p.file).name for p in (*manifest.pieces, *manifest.retired)}
    rebuilding = _rebuild_pieces(store_dir)
    orphan = "not in the manifest (left by an interrupted run; the next run deletes it)"
    unfinished = "part of an unfinished rebuild (extract --rebuild resumes it)"
    notes = [
        f"{folder}/{entry.name}: {unfinished if folder == PIECES and entry.name in rebuilding else orphan}"
        for folder, keep in (
            (PIECES, named),
            (INDEX, {Path(manifest.index.file).name} if manifest.index else set()),
        )
        for entry in (sorted((store_dir / folder).iterdir()) if (store_dir / folder).is_dir() else [])
        if entry.name not in keep
    ]
    return findings, notes + leftover_notes(store_dir)


def _rebuild_pieces(store_dir: Path) -> set[str]:
    """Pieces an unfinished rebuild has committed (none if its manifest is unreadable)."""
    if not (store_dir / REBUILD_MANIFEST).exists():
        return set()
    try:
        return {Path(p.file).name for p in read_manifest(store_dir, REBUILD_MANIFEST).pieces}
    except StoreError:
        return set()


def leftover_notes(store_dir: Path) -> list[str]:
    """Temporary files of killed writers (manifest, run records) and unfinished pieces: harmless,
    and deleted by the next writer, but reported so that nothing lingers unseen."""
    notes = [
        f"{entry.relative_to(store_dir)}: left by a killed writer (the next writer deletes it)"
        for folder in (store_dir, store_dir / RUNS)
        for entry in stale_temps(folder)
    ]
    unfinished = store_dir / TMP
    notes += [
        f"{TMP}/{entry.name}: unfinished piece (a writer was killed or is running; the next deletes it)"
        for entry in (sorted(unfinished.iterdir()) if unfinished.is_dir() else [])
    ]
    return notes


def damaged_pieces(path: str | Path) -> dict[str, str]:
    """{piece file: first finding} of the committed pieces that are missing or damaged."""
    store_dir = Path(path)
    manifest = read_manifest(store_dir)
    damaged: dict[str, str] = {}
    for piece in manifest.pieces:
        piece_path = store_dir / piece.file
        if not piece_path.is_file():
            damaged[piece.file] = "missing"
        elif file_sha256(piece_path) != piece.sha256:
            damaged[piece.file] = "sha256 differs from the manifest"
    return damaged


def _check_index(store_dir: Path, manifest: Manifest) -> list[str]:
    """The index file is intact and says what its pieces say."""
    if manifest.index is None:
        return []
    try:
        rows, _ = read_index(store_dir, manifest.index, manifest.pieces)
    except FileNotFoundError:
        return [f"{manifest.index.file}: missing"]
    except StoreError as exc:
        return [str(exc)]
    covered = manifest.pieces[: manifest.index.pieces]
    counts = np.bincount(rows.piece, minlength=len(covered))
    return [
        f"{manifest.index.file}: holds {counts[i]} rows of {piece.file}, the manifest says {piece.rows}"
        for i, piece in enumerate(covered)
        if counts[i] != piece.rows
    ]


def _check_piece(path: Path, rows: int, maps: list[str]) -> list[str]:
    problems = []
    with h5py.File(path, "r") as f:
        for name in COLUMNS:
            if len(f[name]) != rows:
                problems.append(f"{name} has {len(f[name])} rows, manifest says {rows}")
        for name in maps:
            data = read_all(f, name)  # a full read checks every fletcher32 or XXH3 digest
            if len(data) != rows:
                problems.append(f"{name} has {len(data)} rows, manifest says {rows}")
            if np.isnan(data).any():
                problems.append(f"{name} holds NaN values")
            if (data < 0).any():
                problems.append(f"{name} holds negative values (ReLU maps never do)")
    return problems


__all__ = ["StoreError", "damaged_pieces", "verify_store"]
