"""A `.keras` archive's layer sizes checked against the kernels it stores, before Keras builds it.

Keras builds a model from its config.json, allocating and initialising every variable, before it
reads model.weights.h5 and finds that a shape differs: a crafted ``"units": 1000000000`` in a
Dense layer asks for 2 TB first (issue 14). So every Dense layer's units and every Conv2D's
kernel size and filters must be those of a kernel the archive stores, compared as multisets
(whatever names Keras gives the stored layers); the stored kernels are bounded by the file's bytes.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from typing import Any

from classifiers.errors import PayloadError

__all__ = ["check_layer_sizes"]

WEIGHTS_MEMBER = "model.weights.h5"
# A layer's first variable (a Dense or Conv2D kernel), at any depth of nested models; the
# optimizer's slots, which have the same shapes, are stored under optimizer/ and left out.
KERNEL = re.compile(r"^(?:layers/[^/]+/)+vars/0$")
MAX_INFLATION = 4  # float weights deflate to about 90% of their size; a zip bomb to 0.1%


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    return value if isinstance(value, int | str | float | type(None)) else repr(value)


def configured_kernels(node: Any) -> Counter[tuple[Any, ...]]:
    """The kernel sizes config.json asks for: ("Dense", units), ("Conv2D", kh, kw, filters)."""
    found: Counter[tuple[Any, ...]] = Counter()
    if isinstance(node, dict):
        config = node.get("config")
        if node.get("class_name") == "Dense" and isinstance(config, dict):
            found[("Dense", _hashable(config.get("units")))] += 1
        elif node.get("class_name") == "Conv2D" and isinstance(config, dict):
            size = _hashable(config.get("kernel_size"))
            size = size if isinstance(size, tuple) else (size, size)
            found[("Conv2D", *size, _hashable(config.get("filters")))] += 1
        for value in node.values():
            found += configured_kernels(value)
    elif isinstance(node, list):
        for value in node:
            found += configured_kernels(value)
    return found


def stored_kernels(archive: zipfile.ZipFile) -> Counter[tuple[Any, ...]]:
    """The kernel sizes model.weights.h5 holds, in the same form (shapes only: no data read)."""
    import h5py

    found: Counter[tuple[Any, ...]] = Counter()

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset) and KERNEL.match(name):
            shape = item.shape
            if len(shape) == 2:
                found[("Dense", shape[1])] += 1
            elif len(shape) == 4:
                found[("Conv2D", shape[0], shape[1], shape[3])] += 1

    info = archive.getinfo(WEIGHTS_MEMBER)
    # Read into memory (seeking in a zip member rereads it from its start each time): Keras
    # writes it stored, so its size is its bytes on disk; a member that would inflate far
    # beyond them is refused before it is inflated.
    if info.file_size > MAX_INFLATION * max(info.compress_size, 1):
        raise PayloadError(
            f"{WEIGHTS_MEMBER} would inflate from {info.compress_size} to {info.file_size} bytes"
        )
    with h5py.File(io.BytesIO(archive.read(WEIGHTS_MEMBER)), "r") as weights:
        weights.visititems(visit)
    return found


def _named(kernel: tuple[Any, ...]) -> str:
    if kernel[0] == "Dense":
        return f"Dense(units={kernel[1]!r})"
    return f"Conv2D(kernel_size={kernel[1:3]!r}, filters={kernel[3]!r})"


def check_layer_sizes(archive: zipfile.ZipFile, config: Any) -> None:
    """Refuse, in one line, a config whose Dense or Conv2D sizes are not the stored kernels'."""
    try:
        stored = stored_kernels(archive)
    except (OSError, KeyError, ValueError) as exc:
        raise PayloadError(f"{WEIGHTS_MEMBER} cannot be read ({type(exc).__name__}: {exc})") from exc
    asked = configured_kernels(config)
    extra = sorted(map(_named, asked - stored))
    if extra:
        raise PayloadError(
            f"config.json asks for layers model.weights.h5 does not store: {', '.join(extra[:3])}"
        )
