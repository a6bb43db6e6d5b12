"""The errors `classifiers` raises on purpose, all under `featurestore.errors.FeaturestoreError`.

The CLI turns exactly that base into one line and an exit code (`classifiers.cli.user_errors`);
anything else is a bug and keeps its traceback. Each message is one line naming the option,
file or model and the reason. `ValueError` is a second base only where scikit-learn's estimator
contract wants one: a parameter value refused when `fit` runs.
"""

from __future__ import annotations

from featurestore.errors import FeaturestoreError

__all__ = [
    "BenchError",
    "FinetuneError",
    "ModelFileError",
    "ParamError",
    "PayloadError",
    "PredictError",
    "TrainError",
]


class ParamError(FeaturestoreError, ValueError):
    """A classifier, feature mode or parameter value that is not accepted (also from `fit`)."""


class TrainError(FeaturestoreError):
    """Training cannot run on this store as asked."""


class ModelFileError(FeaturestoreError):
    """A model folder that cannot be written or must not be loaded."""


class PayloadError(ModelFileError):
    """A payload file that must not or cannot be loaded; `load_model` adds the folder."""


class PredictError(FeaturestoreError):
    """Prediction cannot run on this source with this model."""


class BenchError(FeaturestoreError):
    """A benchmark that cannot run as asked."""


class FinetuneError(FeaturestoreError):
    """Fine-tuning cannot run as asked."""
