"""A piece's maps on disk, always read checked: damage is an error naming the rows, never served.

Two layouts (docs/store-format.md):

- chunked: chunks of about 1 MiB, each with HDF5's fletcher32 checksum, which HDF5 checks on
  every read (pieces written by `extract`: small, and written while the model runs);
- contiguous: one contiguous dataset, with an XXH3-64 digest of every block of `block_rows`
  rows in the dataset `xxh3/<name>` (pieces written by `compact`: large, read sequentially).
  A split read is then one large read straight into the result, its blocks checked after; HDF5's
  per-chunk fletcher32 and the copy out of its chunk buffer cost as much as the read itself.

Why XXH3-64 (the `xxhash` package) and not zlib's CRC-32: on this project's 2-core AMD EPYC,
CRC-32 checks 2.0-2.4 GB/s, slower than the read it checks (~3.4 GB/s from the page cache), and
a split read ran at 0.46 of a plain read of its bytes; XXH3-64 checks 21 GB/s. Like CRC-32 it
guards against damage, not tampering (the manifest's sha256 of the whole piece does that,
`featurestore verify`): a damaged block passes with probability 2**-64.

Anyone can check the second layout with h5py and xxhash alone:

    digests = f["xxh3/features"]; n = digests.attrs["block_rows"]; maps = f["features"]
    for b, expected in enumerate(digests[()]):
        assert xxhash.xxh3_64_intdigest(maps[b * n : (b + 1) * n].tobytes()) == expected
"""

from __future__ import annotations

import h5py
import numpy as np
import xxhash

DIGEST_GROUP = "xxh3"  # xxh3/<map dataset>: (blocks,) uint64, attribute block_rows
BLOCK_BYTES = 2**20  # rows a digest covers: about 1 MiB, like a chunk


class ChecksumError(OSError):
    """Maps whose bytes differ from their checksum (an OSError, as HDF5's fletcher32 failures)."""


def block_rows(row_bytes: int) -> int:
    """Rows of one checksummed block: about BLOCK_BYTES."""
    return max(1, BLOCK_BYTES // max(1, row_bytes))


def digest_name(name: str) -> str:
    return f"{DIGEST_GROUP}/{name}"


def write_contiguous(f: h5py.File, name: str, maps: np.ndarray) -> None:
    """`maps` as one contiguous dataset and the XXH3-64 digest of each block of rows beside it."""
    maps = np.ascontiguousarray(maps)
    f.create_dataset(name, data=maps)
    rows = block_rows(maps[:1].nbytes)
    digests = np.array([_digest(maps[at : at + rows]) for at in range(0, len(maps), rows)], np.uint64)
    table = f.create_dataset(digest_name(name), data=digests, fletcher32=True)
    table.attrs["block_rows"] = rows


def read_rows(f: h5py.File, name: str, start: int, stop: int, out: np.ndarray) -> np.ndarray:
    """Rows [start, stop) of the map dataset `name` into `out`, checked (either layout).

    ChecksumError when a block's bytes differ from its digest; HDF5's OSError for a chunk that
    fails its fletcher32; a dataset that carries neither checksum is refused, never served.
    """
    dataset = f[name]
    if digest_name(name) not in f:
        if not dataset.fletcher32:
            raise ChecksumError(f"{name} carries no checksum (neither fletcher32 nor {digest_name(name)})")
        if stop > start:
            dataset.read_direct(out, source_sel=np.s_[start:stop])
        return out
    table = f[digest_name(name)]
    rows = int(table.attrs["block_rows"])
    digests = table[()]
    if len(digests) != -(-dataset.shape[0] // rows):
        raise ChecksumError(f"{digest_name(name)} has {len(digests)} blocks for {dataset.shape[0]} rows")
    n = dataset.shape[0]
    # Whole blocks [first, last) go straight into the result in one read, then are checked; the
    # blocks the selection covers in part (and any maps to convert, e.g. float16) go through a
    # block-sized buffer, read whole and checked before their rows are copied.
    first = min(-(-start // rows) * rows, n)
    last = stop if stop == n else stop // rows * rows
    if out.dtype != dataset.dtype or not out.flags.c_contiguous or first >= last:
        _read_blocks(dataset, start, stop, rows, digests, out, start)
        return out
    middle = out[first - start : last - start]
    dataset.read_direct(middle, source_sel=np.s_[first:last])
    _check(middle, rows, digests, first // rows, name, first)
    _read_blocks(dataset, start, first, rows, digests, out, start)
    _read_blocks(dataset, last, stop, rows, digests, out, start)
    return out


def _read_blocks(
    dataset: h5py.Dataset, lo: int, hi: int, rows: int, digests: np.ndarray, out: np.ndarray, start: int
) -> None:
    """Rows [lo, hi) into out[lo - start : hi - start] through a buffer of one whole block."""
    if hi <= lo:
        return
    n = dataset.shape[0]
    buffer = np.empty((rows, *dataset.shape[1:]), dataset.dtype)
    for block in range(lo // rows, (hi - 1) // rows + 1):
        b_lo, b_hi = block * rows, min((block + 1) * rows, n)
        part = buffer[: b_hi - b_lo]
        dataset.read_direct(part, source_sel=np.s_[b_lo:b_hi])
        _check(part, rows, digests, block, dataset.name.lstrip("/"), b_lo)
        a, b = max(lo, b_lo), min(hi, b_hi)
        out[a - start : b - start] = part[a - b_lo : b - b_lo]


def read_all(f: h5py.File, name: str) -> np.ndarray:
    """Every row of a map dataset, checked, as stored (its own dtype)."""
    dataset = f[name]
    return read_rows(f, name, 0, dataset.shape[0], np.empty(dataset.shape, dataset.dtype))


def _check(
    data: np.ndarray, rows: int, digests: np.ndarray, first_block: int, name: str, first_row: int
) -> None:
    """Each block of `rows` rows of `data` (whole blocks from `first_block`) against its digest."""
    for k, at in enumerate(range(0, len(data), rows)):
        if _digest(data[at : at + rows]) != int(digests[first_block + k]):
            lo = first_row + at
            hi = lo + min(rows, len(data) - at)
            raise ChecksumError(f"{name} rows {lo}-{hi - 1} differ from their digest ({digest_name(name)})")


def _digest(block: np.ndarray) -> int:
    return xxhash.xxh3_64_intdigest(memoryview(np.ascontiguousarray(block)).cast("B"))


__all__ = [
    "BLOCK_BYTES",
    "DIGEST_GROUP",
    "ChecksumError",
    "block_rows",
    "digest_name",
    "read_all",
    "read_rows",
    "write_contiguous",
]
