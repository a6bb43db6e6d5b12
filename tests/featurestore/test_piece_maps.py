"""Compacted pieces: maps contiguous with an XXH3-64 digest per block; read checked, bit-identical to the
chunked pieces they replace; damage named in one line by every reader and by `verify`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from featurestore import piece_maps
from featurestore.compact import compact_store
from featurestore.fingerprint import Fingerprint
from featurestore.format import FORMAT, MANIFEST, StoreError, read_manifest
from featurestore.splits import SPLITS
from featurestore.store import open_store
from featurestore.testing import cats_dogs_writer
from featurestore.verify import verify_store
from featurestore.writer import Row

FP = Fingerprint(weights_sha256="d" * 64, input_size=32, flip_views=True)
ROW_BYTES = 2 * 2 * 8 * 4  # maps of (2, 2, 8) float32


def row(i: int, rng: np.random.Generator) -> Row:
    relpath = f"{'cats' if i % 2 else 'dogs'}/{i:04d}.jpg"
    return Row(
        relpath=relpath,
        image_id=f"{i:064x}",
        label=relpath.split("/")[0],
        split=SPLITS[i % 3],
        size=i,
        mtime_ns=i,
        maps={
            "features": rng.random((2, 2, 8), dtype=np.float32),
            "flipped/features": rng.random((2, 2, 8), dtype=np.float32),
        },
    )


def chunked_store(path: Path, n: int = 61, per_piece: int = 7) -> None:
    """n rows of random maps in small extraction-like (chunked, fletcher32) pieces."""
    rng = np.random.default_rng(5)
    rows = [row(i, rng) for i in range(n)]
    with cats_dogs_writer(path, FP) as w:
        for at in range(0, n, per_piece):
            w.commit_rows(rows[at : at + per_piece])


def by_path(store_path: Path, split: str | None = None, flipped: bool = False) -> dict[str, bytes]:
    data = open_store(store_path).load(split, flipped=flipped)
    assert data.features.dtype == np.float32
    return {p: f.tobytes() for p, f in zip(data.paths, data.features, strict=True)}


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Blocks of 3 rows, so that splits start and end inside blocks (reads of partial blocks)."""
    monkeypatch.setattr(piece_maps, "BLOCK_BYTES", 3 * ROW_BYTES)
    return 3


def compacted_pieces(path: Path) -> list[Path]:
    pieces = [path / p.file for p in read_manifest(path).pieces]
    found = []
    for piece in pieces:
        with h5py.File(piece, "r") as f:
            if piece_maps.digest_name("features") in f:
                assert f["features"].chunks is None and not f["features"].fletcher32
                found.append(piece)
    return found


def test_split_reads_of_compacted_pieces_are_bit_identical_to_the_chunked_ones(
    tmp_path: Path, small_blocks: int
) -> None:
    chunked_store(tmp_path / "s")
    # Rows deleted after the compaction make its pieces' splits reads with holes (masked reads).
    before = {
        (split, flipped): by_path(tmp_path / "s", split, flipped)
        for split in (*SPLITS, None)
        for flipped in (False, True)
    }
    maps_before = open_store(tmp_path / "s").maps_of_id(f"{17:064x}")
    compact_store(tmp_path / "s", retain_seconds=0)
    assert len(compacted_pieces(tmp_path / "s")) == len(read_manifest(tmp_path / "s").pieces) == 1
    for (split, flipped), expected in before.items():
        assert by_path(tmp_path / "s", split, flipped) == expected, (split, flipped)
    store = open_store(tmp_path / "s")
    after = store.maps_of_id(f"{17:064x}")
    assert after is not None and maps_before is not None
    assert {k: v.tobytes() for k, v in after.items()} == {k: v.tobytes() for k, v in maps_before.items()}
    batches = list(store.iter_batches("train", batch_size=4))
    joined = {p: f.tobytes() for b in batches for p, f in zip(b.paths, b.features, strict=True)}
    assert joined == before[("train", False)] and max(len(b) for b in batches) == 4

    gone = sorted(before[("train", False)])[1::3]
    with cats_dogs_writer(tmp_path / "s", FP) as w:
        w.commit(deleted=gone)
    expected = {p: v for p, v in before[("train", False)].items() if p not in gone}
    assert by_path(tmp_path / "s", "train") == expected
    assert verify_store(tmp_path / "s") == ([], [])


def test_piece_maps_reads_any_row_range_checked_and_converts_float16(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.random((13, 2, 2), dtype=np.float32)
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        piece_maps.write_contiguous(f, "features", data)
        piece_maps.write_contiguous(f, "half", data.astype(np.float16))
    with h5py.File(path, "r") as f:
        assert f["xxh3/features"].attrs["block_rows"] == piece_maps.block_rows(data[0].nbytes)
        for name, stored in (("features", data), ("half", data.astype(np.float16))):
            for start in range(14):
                for stop in range(start, 14):
                    out = np.empty((stop - start, 2, 2), np.float32)
                    got = piece_maps.read_rows(f, name, start, stop, out)
                    assert np.array_equal(got, stored[start:stop].astype(np.float32)), (name, start, stop)
        assert piece_maps.read_all(f, "half").dtype == np.float16


def flip_bit(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def maps_offset(piece: Path, name: str = "features") -> tuple[int, int]:
    """Where a contiguous map dataset's bytes start in the file, and its row size."""
    with h5py.File(piece, "r") as f:
        return f[name].id.get_offset(), f[name][:1].nbytes


def test_a_flipped_bit_in_a_compacted_piece_is_named_by_every_reader_and_by_verify(
    tmp_path: Path, small_blocks: int
) -> None:
    chunked_store(tmp_path / "s")
    compact_store(tmp_path / "s", retain_seconds=0)
    (piece,) = compacted_pieces(tmp_path / "s")
    start, row_bytes = maps_offset(piece)
    damaged_row = 40
    flip_bit(piece, start + damaged_row * row_bytes + 5)
    with h5py.File(piece, "r") as f:
        damaged_id = f["ids"][damaged_row].decode()
        damaged_split = f["splits"][damaged_row].decode()
    block = damaged_row // small_blocks * small_blocks
    rows = f"rows {block}-{block + small_blocks - 1}"

    store = open_store(tmp_path / "s")  # the small columns come from the intact index
    with pytest.raises(StoreError) as caught:
        store.load(damaged_split)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{piece}: features cannot be read, the piece is damaged (")
    assert f"features {rows} differ from their digest" in message
    with pytest.raises(StoreError, match=rf"{piece.name}: maps cannot be read.*{rows}"):
        store.maps_of_id(damaged_id)
    with pytest.raises(StoreError, match=rf"{piece.name}: features cannot be read.*{rows}"):
        list(store.iter_batches(damaged_split, batch_size=2))
    assert store.load(damaged_split, flipped=True) is not None  # the flipped maps are intact

    findings, _ = verify_store(tmp_path / "s")
    name = f"pieces/{piece.name}"
    assert f"{name}: sha256 differs from the manifest" in findings
    damaged = f"{name}: cannot be read (features {rows} differ from their digest"
    assert any(line.startswith(damaged) for line in findings), findings
    assert all("\n" not in line for line in findings)
    # compact refuses to move damaged rows into a new piece
    with cats_dogs_writer(tmp_path / "s", FP) as w:
        w.commit(deleted=[f"dogs/{i:04d}.jpg" for i in range(0, 61, 2)])  # make the piece dirty
    refused = rf"{piece.name}: cannot be read, the piece is damaged \(features {rows}"
    with pytest.raises(StoreError, match=refused):
        compact_store(tmp_path / "s", retain_seconds=0)


def test_the_cli_names_the_damaged_compacted_piece_in_one_line(tmp_path: Path) -> None:
    chunked_store(tmp_path / "s", n=400, per_piece=50)
    compact_store(tmp_path / "s", retain_seconds=0)
    (piece,) = compacted_pieces(tmp_path / "s")
    start, row_bytes = maps_offset(piece)
    flip_bit(piece, start + 3 * row_bytes + 1)
    cli = [sys.executable, "-m", "classifiers.cli"]
    verify = subprocess.run([*cli, "verify", str(tmp_path / "s")], capture_output=True, text=True)
    assert verify.returncode == 1
    assert f"damaged: pieces/{piece.name}: cannot be read (features rows 0-" in verify.stdout
    export = subprocess.run(
        [*cli, "export", str(tmp_path / "s"), str(tmp_path / "out.h5")], capture_output=True, text=True
    )
    assert export.returncode != 0 and not (tmp_path / "out.h5").exists()
    assert len(export.stderr.strip().splitlines()) == 1, export.stderr
    assert f"{piece.name}: features cannot be read, the piece is damaged" in export.stderr


def test_a_damaged_checksum_table_or_a_map_without_checksum_is_never_served(
    tmp_path: Path, small_blocks: int
) -> None:
    chunked_store(tmp_path / "s")
    compact_store(tmp_path / "s", retain_seconds=0)
    (piece,) = compacted_pieces(tmp_path / "s")
    with h5py.File(piece, "r") as f:
        table = f[piece_maps.digest_name("features")]
        assert table.fletcher32  # the table has its own checksum
        chunk = table.id.get_chunk_info(0).byte_offset
    saved = piece.read_bytes()
    flip_bit(piece, chunk + 2)
    with pytest.raises(StoreError, match=rf"{piece.name}: features cannot be read, the piece is damaged"):
        open_store(tmp_path / "s").load("train")
    piece.write_bytes(saved)
    with h5py.File(piece, "r+") as f:
        del f[piece_maps.digest_name("features")]
    with pytest.raises(StoreError, match=rf"{piece.name}: features cannot be read.*carries no checksum"):
        open_store(tmp_path / "s").load("train")
    assert any("carries no checksum" in line for line in verify_store(tmp_path / "s")[0])


def test_a_format_2_store_of_chunked_pieces_reads_and_is_upgraded_by_compact(tmp_path: Path) -> None:
    chunked_store(tmp_path / "s")
    raw = json.loads((tmp_path / "s" / MANIFEST).read_bytes())
    raw["format"] = "featurestore.store/2"
    (tmp_path / "s" / MANIFEST).write_text(json.dumps(raw))
    expected = by_path(tmp_path / "s")
    assert compacted_pieces(tmp_path / "s") == []
    compact_store(tmp_path / "s", retain_seconds=0)
    assert json.loads((tmp_path / "s" / MANIFEST).read_bytes())["format"] == FORMAT
    assert len(compacted_pieces(tmp_path / "s")) == 1
    assert by_path(tmp_path / "s") == expected


def test_a_split_read_with_holes_hashes_each_digest_block_once(
    tmp_path: Path, small_blocks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featurestore import store as store_module

    chunked_store(tmp_path / "s", n=200)
    compact_store(tmp_path / "s", retain_seconds=0)
    with cats_dogs_writer(tmp_path / "s", FP) as w:  # holes in the compacted piece's train rows
        w.commit(deleted=sorted(by_path(tmp_path / "s", "train"))[1::4])
    expected = by_path(tmp_path / "s", "train")
    # Masked blocks of 7 rows' bytes would end inside the digest blocks of 3 rows.
    monkeypatch.setattr(store_module, "MASKED_READ_BYTES", 7 * ROW_BYTES)
    checked: list[int] = []
    check = piece_maps._check

    def counting(data: np.ndarray, rows: int, digests: np.ndarray, first: int, *rest: object) -> None:
        checked.extend(range(first, first + -(-len(data) // rows)))
        check(data, rows, digests, first, *rest)

    monkeypatch.setattr(piece_maps, "_check", counting)
    assert by_path(tmp_path / "s", "train") == expected
    assert checked and len(checked) == len(set(checked)), sorted(checked)
