"""Resolve a weights spec to a verified Keras VGG16 weights file; sha256 of weight values.

Heavy imports (keras, onnx) stay inside functions so that importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from featurestore.cache import cache_dir
from featurestore.errors import FeaturestoreError
from featurestore.fsutil import atomic_write_bytes, file_sha256

IMAGENET_WEIGHTS_FILENAME = "vgg16_imagenet_notop.weights.h5"
# The same file and hash as keras/src/applications/vgg16.py (include_top=False).
KERAS_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
KERAS_NOTOP_HASH = "6d6bbae143d832006294945121d1f1fc"
IMPORT_HINT = "run `featurestore weights import-onnx`"


class WeightsError(FeaturestoreError):
    """A weights file is missing, corrupt or unobtainable; the message is one line."""


def weights_cache_dir() -> Path:
    """The folder holding featurestore's own weights files."""
    return cache_dir() / "weights"


def resolve_weights(spec: str) -> Path | None:
    """Turn ``"imagenet"``, ``"random"`` (None: seeded random init) or a file path into a file."""
    if spec == "random":
        return None
    if spec == "imagenet":
        return _resolve_imagenet()
    return check_weights_file(Path(spec))


def _resolve_imagenet() -> Path:
    cached = weights_cache_dir() / IMAGENET_WEIGHTS_FILENAME
    if cached.exists():
        if not is_trusted(cached):
            raise WeightsError(f"{cached}: no matching sha256 record, not trusted; {IMPORT_HINT}")
        return cached
    import keras

    try:
        path = keras.utils.get_file(
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            KERAS_NOTOP_URL,
            cache_subdir="models",
            file_hash=KERAS_NOTOP_HASH,
        )
    except Exception as exc:  # get_file raises a bare Exception on network failures
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsError(
            f"ImageNet VGG16 weights: no copy at {cached} and the Keras download failed "
            f"({reason}); {IMPORT_HINT}"
        ) from exc
    return Path(path)


def check_weights_file(path: Path) -> Path:
    """Return ``path`` if it loads into a VGG16 conv base, else raise WeightsError."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path}: not an HDF5 weights file")
    import keras

    # Loading is the only complete check: Keras raises when a layer is missing or mis-shaped.
    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    try:
        with warnings.catch_warnings():  # Keras warns per layer before it raises; keep one line
            warnings.simplefilter("ignore", UserWarning)
            model.load_weights(path)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsError(f"{path}: not loadable as VGG16 conv weights ({reason})") from exc
    return path


def weights_sha256(model: Any) -> str:
    """sha256 over every weight of ``model`` in order: path, shape, dtype and value bytes."""
    import keras
    import numpy as np

    digest = hashlib.sha256()
    for variable in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        header = f"{variable.path}\0{array.shape}\0{array.dtype.str}\0"
        digest.update(header.encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def hash_record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_trusted(path: Path) -> bool:
    """True when ``path`` has a sha256 record (written after it was complete) that matches."""
    record = hash_record_path(path)
    return record.is_file() and record.read_text().strip() == weights_file_sha256(path)


# sha256 of weights files read by this process, keyed by what their stat says: checking a file
# and naming its values then hashes its 60 MB once, not twice, per run.
_hashed: dict[tuple[str, int, int, int, int], str] = {}


def weights_file_sha256(path: Path) -> str:
    """`file_sha256` of a weights file, once per process while the file stays as it is."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _hashed:
        _hashed[key] = file_sha256(path)
    return _hashed[key]


def record_hash(path: Path) -> None:
    # Written after the weights file is in place: a crash in between leaves no record, and a
    # file without a record is never trusted.
    atomic_write_bytes(hash_record_path(path), (file_sha256(path) + "\n").encode())
