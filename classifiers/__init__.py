"""classifiers: heads and scikit-learn models trained on a feature store's cached maps.

Public names are re-exported lazily (PEP 562), so ``import classifiers`` costs nothing and
``featurestore --help`` imports neither scikit-learn nor TensorFlow; TensorFlow is imported
only when a Keras head is fitted, run or loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FeatureTransform": "classifiers.transforms",
    "FEATURE_MODES": "classifiers.transforms",
    "KerasHead": "classifiers.keras_heads",
    "DenseHead": "classifiers.keras_heads",
    "GapHead": "classifiers.keras_heads",
    "available": "classifiers.registry",
    "make_classifier": "classifiers.registry",
    "parse_params": "classifiers.registry",
    "parameters": "classifiers.registry",
    "load_config": "classifiers.params",
    "evaluate": "classifiers.metrics",
    "ModelKind": "classifiers.model_file",
    "SavedModel": "classifiers.model_file",
    "load_model": "classifiers.model_file",
    "register_kind": "classifiers.model_file",
    "save_model": "classifiers.model_file",
    "TrainReport": "classifiers.training",
    "fit_estimator": "classifiers.training",
    "train_from_store": "classifiers.training",
    "predict_rows": "classifiers.prediction",
    "write_csv": "classifiers.prediction",
    "BenchError": "classifiers.errors",
    "FinetuneError": "classifiers.errors",
    "ModelFileError": "classifiers.errors",
    "ParamError": "classifiers.errors",
    "PayloadError": "classifiers.errors",
    "PredictError": "classifiers.errors",
    "TrainError": "classifiers.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
