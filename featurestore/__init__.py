"""featurestore: run an ImageNet conv base once, keep its feature maps in a crash-safe HDF5 store.

The public API is what this package exports, plus the public names of the modules listed in
docs/architecture.md. Names are exported lazily (PEP 562): importing a light module such as
`featurestore.errors` or `featurestore.checks` does not import numpy, h5py or Keras, which
keeps `featurestore --help` fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from featurestore._version import __version__

_EXPORTS = {
    "ConfigError": "featurestore.errors",
    "FeaturestoreError": "featurestore.errors",
    "JobInterrupted": "featurestore.errors",
    "ExtractConfig": "featurestore.extract_config",
    "ExtractInterrupted": "featurestore.extract",
    "ExtractSummary": "featurestore.extract",
    "run_extract": "featurestore.extract",
    "Extractor": "featurestore.extractor",
    "ExtractorError": "featurestore.extractor",
    "Fingerprint": "featurestore.fingerprint",
    "SplitFractions": "featurestore.splits",
    "FeatureSet": "featurestore.store",
    "FeatureStore": "featurestore.store",
    "StoredImage": "featurestore.store",
    "StoreError": "featurestore.store",
    "is_store": "featurestore.store",
    "open_store": "featurestore.store",
}

__all__ = [
    "ConfigError",
    "ExtractConfig",
    "ExtractInterrupted",
    "ExtractSummary",
    "Extractor",
    "ExtractorError",
    "FeatureSet",
    "FeatureStore",
    "FeaturestoreError",
    "Fingerprint",
    "JobInterrupted",
    "SplitFractions",
    "StoreError",
    "StoredImage",
    "__version__",
    "is_store",
    "open_store",
    "run_extract",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
