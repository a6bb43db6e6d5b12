"""The work of the Ray engine's stages, as plain functions and one class over numpy batches.

Ray Data calls these on cluster workers (`featurestore.ray_engine` builds the dataset): decode
on CPU tasks, the model in a pool of actors (one `Extractor` each), pieces written by CPU tasks
into the store's folder with `featurestore.writer.write_piece`. Nothing here imports Ray, so the
same code runs, and is read, like the local engine's.

A batch is a dict of numpy columns. Every stage passes the small columns through and adds its
own; seconds are per row (a batch's time spread over its rows), so a sum over any set of rows
is that stage's worker-seconds for them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.compute import check_compute
from featurestore.decoding import decode_file
from featurestore.errors import FeaturestoreError
from featurestore.extractor import Extractor
from featurestore.fingerprint import Fingerprint
from featurestore.format import TMP
from featurestore.quiet import quiet_tensorflow
from featurestore.splits import SplitFractions, split_of
from featurestore.writer import Row, write_piece

Batch = dict[str, np.ndarray]

#: Column prefix of the maps in a batch (the dataset name follows: "maps:features").
MAPS = "maps:"


class StoreNotShared(FeaturestoreError):
    """A Ray worker cannot see the store's folder: it is not on storage shared by every node."""


def to_bytes(array: np.ndarray) -> bytes:
    """An array as self-describing bytes (.npy): a plain binary column between the stages, so
    that no row depends on how Ray slices and joins tensor columns into batches."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def known_ids_array(ids: set[str]) -> np.ndarray:
    """Content ids as a sorted fixed-width array: one shared, zero-copy object for every task."""
    return np.array(sorted(ids), dtype="S64")


def _is_known(image_id: str, known: np.ndarray) -> bool:
    key = image_id.encode()
    at = int(np.searchsorted(known, key))
    return at < len(known) and known[at] == key


@dataclasses.dataclass(frozen=True)
class _Known:
    """Ids whose maps the driver already has: the store's (sorted), and the path's live id."""

    ids: np.ndarray
    current: str

    def __contains__(self, image_id: object) -> bool:
        return image_id == self.current or (isinstance(image_id, str) and _is_known(image_id, self.ids))


def decode_batch(batch: Batch, *, input_size: int, decoder: str, known: np.ndarray) -> Batch:
    """Read each file once, hash it, and decode the same bytes unless its content (or its path's
    live content) is known: `decode_file`, as the local pipeline's decode workers call it. A file
    that cannot be read or decoded gets its one-line reason in `error`."""
    n = len(batch["path"])
    ids, sizes, mtimes, errors = [""] * n, np.zeros(n, np.int64), np.zeros(n, np.int64), [""] * n
    pixels: list[bytes] = [b""] * n
    has_pixels = np.zeros(n, bool)
    started = time.perf_counter()
    for i, (path, current) in enumerate(zip(batch["path"], batch["current"], strict=True)):
        result = decode_file(path, input_size, decoder=decoder, skip_ids=_Known(known, str(current)))
        ids[i], sizes[i], mtimes[i], errors[i] = (
            result.image_id,
            result.size,
            result.mtime_ns,
            result.error or "",
        )
        if result.pixels is not None and result.error is None:
            pixels[i] = to_bytes(result.pixels)
            has_pixels[i] = True
    seconds = (time.perf_counter() - started) / max(n, 1)
    return {
        **batch,
        "image_id": np.array(ids, dtype=object),
        "size": sizes,
        "mtime_ns": mtimes,
        "error": np.array(errors, dtype=object),
        "has_pixels": has_pixels,
        "pixels": np.array(pixels, dtype=object),
        "decode_seconds": np.full(n, seconds),
    }


def extractor_settings(extractor: Extractor) -> dict[str, Any]:
    """What a worker needs to build the same extractor: weights resolved to a file here (the
    store and the weights are on storage every node sees), the rest as the driver has it."""
    from featurestore.weights import resolve_weights

    path = resolve_weights(extractor.weights)
    return {
        "weights": "random" if path is None else str(path),
        "input_size": extractor.input_size,
        "layer": extractor.layer,
        "extra_layers": extractor.extra_layers,
        "dtype": extractor.dtype,
        "precision": extractor.precision,
        "flip_views": extractor.flip_views,
        "views": extractor.views,
        "decoder": extractor.decoder,
        "batch_size": extractor.batch_size,
        "seed": extractor.seed,
    }


class ModelStage:
    """One model per actor: embeds the batch's decoded rows with the local engine's
    `Extractor`, so every image's maps are bit-identical to the local engine's."""

    def __init__(
        self, settings: dict[str, Any], fingerprint: Fingerprint, store: str, recorded: Fingerprint | None
    ) -> None:
        quiet_tensorflow()  # as the CLI does: no start-up lines from every actor
        # Ray sets OMP_NUM_THREADS to the actor's num_cpus (1): the model would then run on one
        # core of the node, where the local engine uses all of them (measured: half the rate).
        os.environ["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
        # where the model runs: its precision must be native here, its backend and device kind
        # those of the store's rows (the local pipeline checks the same before its first batch)
        check_compute(store, fingerprint, recorded)
        self.extractor = Extractor(**settings)
        differences = self.extractor.fingerprint.differences(fingerprint)
        if differences:  # another node with other weights or libraries would write other maps
            raise FeaturestoreError(
                f"Ray worker on {socket.gethostname()} builds another model than the driver: "
                + "; ".join(differences)
            )
        # One warm-up call: builds and traces the model (a batch's time is then model time) and
        # gives the maps' shapes, so that every batch has the same columns, computed rows or not.
        size = self.extractor.input_size
        blank = self.extractor.embed(np.zeros((1, size, size, 3), np.float32), ["0" * 64])
        self.blank = {name: np.zeros_like(maps[0]) for name, maps in blank.items()}
        self.first_call = True
        # provenance of the maps: this actor's libraries and device, for the manifest
        self.versions = json.dumps(self.extractor.with_library_versions().library_versions)

    def __call__(self, batch: Batch) -> Batch:
        started = time.perf_counter()
        # when this actor was ready (wall clock: the driver compares it with its own start)
        ready = time.time() if self.first_call else 0.0
        self.first_call = False
        pixels = batch.pop("pixels")
        rows = np.flatnonzero(batch["has_pixels"])
        n = len(pixels)
        out: Batch = dict(batch)
        columns = {name: [b""] * n for name in self.blank}
        if len(rows):
            # uint8 pixels become the model's float32 input here, as in the local pipeline
            images = np.stack([from_bytes(pixels[i]) for i in rows]).astype(np.float32)
            ids = [str(batch["image_id"][i]) for i in rows]
            for name, maps in self.extractor.embed(images, ids).items():
                for j, i in enumerate(rows):
                    columns[name][i] = to_bytes(maps[j])
        for name, column in columns.items():
            out[MAPS + name] = np.array(column, dtype=object)
        out["model_seconds"] = np.full(n, (time.perf_counter() - started) / max(n, 1))
        out["model_ready_at"] = np.full(n, ready)
        out["versions"] = np.array([self.versions if ready else ""] * n, dtype=object)
        return out


def _node_id() -> str:
    """The Ray node this worker runs on (where the piece was written)."""
    import ray

    return ray.get_runtime_context().get_node_id()


def write_batch(batch: Batch, *, store: str, fingerprint: Fingerprint, fractions: SplitFractions) -> Batch:
    """Write the batch's computed rows as one piece of `store` (not committed: the driver names
    it in a manifest); return the small columns with the piece's name, rows and sha256."""
    if not (Path(store) / TMP).is_dir():
        raise StoreNotShared(
            f"{store}: not found on Ray node {socket.gethostname()}; put the store on a file system "
            "that every node mounts at the same path"
        )
    started = time.perf_counter()
    computed = np.flatnonzero(batch["has_pixels"])
    n = len(batch["has_pixels"])
    piece, piece_rows, piece_sha = "", 0, ""
    map_columns = [name for name in batch if name.startswith(MAPS)]
    if len(computed):
        rows = [
            Row(
                relpath=str(batch["relpath"][i]),
                image_id=str(batch["image_id"][i]),
                label=str(batch["label"][i]) or None,
                split=split_of(str(batch["image_id"][i]), fractions),
                size=int(batch["size"][i]),
                mtime_ns=int(batch["mtime_ns"][i]),
                maps={name[len(MAPS) :]: from_bytes(batch[name][i]) for name in map_columns},
            )
            for i in computed
        ]
        info = write_piece(store, rows, fingerprint=fingerprint)
        piece, piece_rows, piece_sha = info.file, info.rows, info.sha256
    out = {name: column for name, column in batch.items() if not name.startswith(MAPS)}
    out["piece"] = np.array([piece] * n, dtype=object)
    out["piece_rows"] = np.full(n, piece_rows, np.int64)
    out["piece_sha256"] = np.array([piece_sha] * n, dtype=object)
    out["node"] = np.array([_node_id()] * n, dtype=object)
    out["write_seconds"] = np.full(n, (time.perf_counter() - started) / max(n, 1))
    return out
