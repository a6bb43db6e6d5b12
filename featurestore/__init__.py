"""featurestore: run an ImageNet conv base once, keep its feature maps in a crash-safe HDF5 store.

The public API is what this package exports, plus the public names of the modules listed in
docs/architecture.md (`format`, `store`, `writer`, `fingerprint`, `vgg16`, `fsutil`, `lock`,
`signals`, `errors`, `images`, `sources`, `backbone`, `weights`).
"""

from featurestore._version import __version__
from featurestore.errors import ConfigError, FeaturestoreError, JobInterrupted
from featurestore.extract import ExtractConfig, ExtractInterrupted, ExtractSummary, run_extract
from featurestore.extractor import Extractor, ExtractorError
from featurestore.fingerprint import Fingerprint
from featurestore.splits import SplitFractions
from featurestore.store import FeatureSet, FeatureStore, StoredImage, StoreError, is_store, open_store

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
