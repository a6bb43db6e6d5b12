"""featurestore: run an ImageNet conv base once, keep its feature maps in a crash-safe HDF5 store."""

from featurestore._version import __version__
from featurestore.extract import ExtractConfig, ExtractInterrupted, ExtractSummary, run_extract
from featurestore.extractor import Extractor, ExtractorError
from featurestore.fingerprint import Fingerprint
from featurestore.splits import SplitFractions
from featurestore.store import FeatureSet, FeatureStore, StoreError, open_store

__all__ = [
    "ExtractConfig",
    "ExtractInterrupted",
    "ExtractSummary",
    "Extractor",
    "ExtractorError",
    "FeatureSet",
    "FeatureStore",
    "Fingerprint",
    "SplitFractions",
    "StoreError",
    "__version__",
    "open_store",
    "run_extract",
]
