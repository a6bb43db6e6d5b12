"""The fingerprint: everything that shaped a store's features, and its digest.

Two stores whose fingerprints have the same digest hold interchangeable features. Library
versions are recorded for provenance but left out of the digest: a patch release of numpy
must not force a rebuild of a million images. Bump EXTRACTOR_VERSION whenever a code change
alters the features themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

EXTRACTOR_VERSION = 1
DTYPES = ("float32", "float16")
# Keras dtype policies the conv base may compute in; mixed ones are for GPUs.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fingerprint:
    """Identity of a feature extraction. Validated on creation."""

    backbone: str = "vgg16"
    layer: str = "block5_pool"
    input_size: int = 150
    interpolation: str = "pil-bilinear"
    preprocessing: str = "keras.applications.vgg16.preprocess_input(mode=caffe)"
    weights_sha256: str
    dtype: str = "float32"
    precision: str = "float32"
    extra_layers: tuple[str, ...] = ()
    flip_views: bool = False
    extractor_version: int = EXTRACTOR_VERSION
    library_versions: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be at least 32 (VGG16 pools 5 times), not {self.input_size}")
        if self.layer in self.extra_layers:
            raise ValueError(f"extra_layers repeats the main layer {self.layer!r}")
        if len(self.weights_sha256) != 64:
            raise ValueError("weights_sha256 must be a sha256 hex digest")

    @property
    def digest(self) -> str:
        """sha256 of the identity fields (library versions excluded, see module docstring)."""
        identity = {k: v for k, v in self.to_dict().items() if k != "library_versions"}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["extra_layers"] = list(self.extra_layers)
        data["library_versions"] = dict(self.library_versions)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - {"digest"}
        if unknown:
            raise ValueError(
                f"unknown fingerprint fields {sorted(unknown)} (written by a newer featurestore?)"
            )
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["extra_layers"] = tuple(kwargs.get("extra_layers", ()))
        kwargs["library_versions"] = tuple(sorted(dict(kwargs.get("library_versions", {})).items()))
        return cls(**kwargs)

    def differences(self, other: Fingerprint) -> list[str]:
        """Human-readable identity fields in which two fingerprints differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: {mine[key]!r} != {theirs[key]!r}"
            for key in mine
            if key != "library_versions" and mine[key] != theirs[key]
        ]


def library_versions() -> tuple[tuple[str, str], ...]:
    """Versions of the libraries that compute the features, for provenance."""
    import h5py
    import keras
    import numpy
    import PIL

    from featurestore._version import __version__

    return (
        ("featurestore", __version__),
        ("h5py", h5py.__version__),
        ("keras", keras.__version__),
        ("keras_backend", keras.backend.backend()),
        ("numpy", numpy.__version__),
        ("pillow", PIL.__version__),
    )
