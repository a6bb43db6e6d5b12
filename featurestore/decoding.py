"""One source file into what the pipeline needs: its content id, its stat, and its pixels.

The file is read once: the id is the sha256 of the bytes that are decoded, so a file rewritten
while it is read can never get one content's id and another content's maps. `decode_file` is a
plain top-level function of picklable arguments: decode processes, threads and other engines
(a Ray task) call it the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Container
from pathlib import Path

import numpy as np

from featurestore.images import DEFAULT_DECODER, ImageError, decode_image, read_file

__all__ = ["DecodedFile", "decode_file"]


@dataclasses.dataclass
class DecodedFile:
    """The result for one file: `error` set, or an id with `pixels` (None when skipped)."""

    image_id: str = ""
    size: int = 0
    mtime_ns: int = 0
    pixels: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    error: str | None = None


def decode_file(
    path: str | Path,
    input_size: int,
    *,
    decoder: str = DEFAULT_DECODER,
    skip_ids: Container[str] = frozenset(),
) -> DecodedFile:
    """Read `path` once, hash the bytes, and decode the same bytes unless their id is in
    `skip_ids` (content whose maps are already known). Never raises for a bad file."""
    try:
        data, stat = read_file(path)
    except OSError as exc:
        return DecodedFile(error=f"cannot read file ({exc.strerror or exc})")
    except ImageError as exc:
        return DecodedFile(error=str(exc))
    image_id = hashlib.sha256(data).hexdigest()
    result = DecodedFile(image_id=image_id, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if image_id in skip_ids:
        return result
    try:
        result.pixels = decode_image(data, input_size, decoder=decoder, dtype="uint8")
    except ImageError as exc:
        result.error = str(exc)
    return result
