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

from featurestore.vgg16 import LAYER_NAMES, MAX_INPUT_SIZE, MIN_INPUT_SIZE

EXTRACTOR_VERSION = 1
DTYPES = ("float32", "float16")
# Keras dtype policies the conv base may compute in (`featurestore.hardware` says which run
# natively here; float32 is the one for bit-exact reproduction anywhere).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Named image decoders (`featurestore.images`); "pil" is bit-identical to keras.utils.load_img.
DECODERS = ("pil", "pil-draft")
DEFAULT_DECODER = "pil"
#: Most cached augmented views per image (`extract --views K`): each costs one more model pass.
MAX_VIEWS = 32


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
    views: int = 0  # cached augmented views per image (`featurestore.views`), beside the original
    decoder: str = DEFAULT_DECODER
    extractor_version: int = EXTRACTOR_VERSION
    library_versions: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            kind = _FIELD_TYPES[field.name]
            if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
                raise ValueError(f"{field.name} must be {kind.__name__}, not {value!r}"[:200])
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {self.decoder!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if not 0 <= self.views <= MAX_VIEWS:
            raise ValueError(f"views must be between 0 and {MAX_VIEWS}, not {self.views}")
        if not MIN_INPUT_SIZE <= self.input_size <= MAX_INPUT_SIZE:
            raise ValueError(
                f"input_size must be between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE}, not {self.input_size}"
            )
        unknown = [name for name in self.layers if name not in LAYER_NAMES]
        if unknown:
            raise ValueError(f"unknown VGG16 layer(s) {unknown}")
        if len(set(self.extra_layers)) != len(self.extra_layers):
            raise ValueError("extra_layers repeats a layer")
        if self.layer in self.extra_layers:
            raise ValueError(f"extra_layers repeats the main layer {self.layer!r}")
        if len(self.weights_sha256) != 64:
            raise ValueError("weights_sha256 must be a sha256 hex digest")

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers whose maps the store keeps; the first is the main one."""
        return (self.layer, *self.extra_layers)

    @property
    def digest(self) -> str:
        """sha256 of the identity fields (library versions excluded, see module docstring).

        The default decoder and zero views are left out too: stores made before decoders and
        views were named keep their digest, and a store that names another decoder or keeps
        augmented views gets another digest.
        """
        identity = {k: v for k, v in self.to_dict().items() if k != "library_versions"}
        if identity["decoder"] == DEFAULT_DECODER:
            del identity["decoder"]
        if identity["views"] == 0:
            del identity["views"]
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
        layers = kwargs.get("extra_layers", [])
        if not isinstance(layers, list | tuple) or not all(isinstance(name, str) for name in layers):
            raise ValueError(f"extra_layers must be a list of layer names, not {layers!r}"[:200])
        kwargs["extra_layers"] = tuple(layers)
        versions = kwargs.get("library_versions", {})
        if not isinstance(versions, dict):
            raise ValueError(f"library_versions must be an object, not {versions!r}"[:200])
        kwargs["library_versions"] = tuple(sorted((str(k), str(v)) for k, v in versions.items()))
        return cls(**kwargs)

    def differences(self, other: Fingerprint) -> list[str]:
        """Human-readable identity fields in which two fingerprints differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: {mine[key]!r} != {theirs[key]!r}"
            for key in mine
            if key != "library_versions" and mine[key] != theirs[key]
        ]

    # -- compatibility: the one definition -------------------------------------------
    def feature_differences(self, other: Fingerprint) -> list[str]:
        """How the main maps of two stores differ in meaning; empty when a head trained on one
        may read the other's.

        Only `FEATURE_IDENTITY` decides what the main maps are. Storage dtype and compute
        precision round the same maps differently (float16 storage loses nothing a head can use,
        bfloat16 compute moves maps by ~1e-3 relative), and extra layers, flipped or augmented
        views are other datasets beside the main maps.
        """
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: {mine[key]!r} != {theirs[key]!r}" for key in FEATURE_IDENTITY if mine[key] != theirs[key]
        ]

    def recorded_compute(self) -> dict[str, str]:
        """The Keras backend and device kind that computed the store's maps, as recorded with
        the library versions ("" where an older store did not record it)."""
        versions = dict(self.library_versions)
        return {key: versions.get(key, "") for key in ("keras_backend", "device")}

    def main_maps(self) -> Fingerprint:
        """This fingerprint without extra layers, flipped and augmented views: what embedding new
        images for a head needs (same dtype and precision as recorded)."""
        return dataclasses.replace(self, extra_layers=(), flip_views=False, views=0)


#: The fields that decide what a store's main maps mean (see `Fingerprint.feature_differences`).
FEATURE_IDENTITY = (
    "backbone",
    "layer",
    "input_size",
    "interpolation",
    "preprocessing",
    "weights_sha256",
    "decoder",
    "extractor_version",
)

_FIELD_TYPES: dict[str, type] = {
    "backbone": str,
    "layer": str,
    "input_size": int,
    "interpolation": str,
    "preprocessing": str,
    "weights_sha256": str,
    "dtype": str,
    "precision": str,
    "extra_layers": tuple,
    "flip_views": bool,
    "views": int,
    "decoder": str,
    "extractor_version": int,
    "library_versions": tuple,
}


def library_versions() -> tuple[tuple[str, str], ...]:
    """Versions of the libraries that compute the features, and the device kind (cpu or gpu)
    they ran on: provenance, and the record that keeps one store to one backend and device."""
    import h5py
    import keras
    import numpy
    import PIL

    from featurestore._version import __version__
    from featurestore.hardware import device_kind

    return (
        ("device", device_kind()),
        ("featurestore", __version__),
        ("h5py", h5py.__version__),
        ("keras", keras.__version__),
        ("keras_backend", keras.backend.backend()),
        ("numpy", numpy.__version__),
        ("pillow", PIL.__version__),
    )
