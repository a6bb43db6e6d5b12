"""A fitted logistic-regression pipeline as the Keras head that fine-tuning starts from.

The leaderboard's best heads on the maps are often `logreg` (pooled maps, unit rows, L2
logistic regression), not the dense Keras heads. Its probabilities are a Keras chain's, exactly:
the pooling, `UnitNormalization`, and one `Dense` layer holding the regression's coefficients
(sigmoid for two classes, softmax for more). So fine-tuning can start from the best head instead
of retraining a weaker one.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from classifiers.transforms import FeatureTransform

__all__ = ["is_linear_pipeline", "linear_head_network"]

#: FeatureTransform mode -> the Keras layer that computes it on (H, W, C) maps.
POOLING = {
    "max": keras.layers.GlobalMaxPooling2D,
    "avg": keras.layers.GlobalAveragePooling2D,
    "flatten": keras.layers.Flatten,
}


def _steps(estimator: Any) -> tuple[FeatureTransform, bool, LogisticRegression] | None:
    """(features, normalized, regression) of a FeatureTransform [-> Normalizer(l2)] ->
    LogisticRegression pipeline, else None."""
    if not isinstance(estimator, Pipeline):
        return None
    steps = [step for _, step in estimator.steps]
    if len(steps) not in (2, 3) or not isinstance(steps[0], FeatureTransform):
        return None
    if not isinstance(steps[-1], LogisticRegression):
        return None
    if len(steps) == 3 and not (isinstance(steps[1], Normalizer) and steps[1].norm == "l2"):
        return None
    if getattr(steps[-1], "multi_class", "auto") == "ovr":  # normalised sigmoids, not a softmax
        return None
    return steps[0], len(steps) == 3, steps[-1]


def is_linear_pipeline(estimator: Any) -> bool:
    """Whether `estimator` is a pipeline that `linear_head_network` turns into a Keras head."""
    return _steps(estimator) is not None


def linear_head_network(estimator: Pipeline, maps_shape: tuple[int, int, int]) -> keras.Model:
    """The fitted pipeline as a Keras network on (H, W, C) maps, with its probabilities.

    Raises ValueError for any other estimator (see `is_linear_pipeline`).
    """
    steps = _steps(estimator)
    if steps is None:
        raise ValueError("not a FeatureTransform -> [Normalizer] -> LogisticRegression pipeline")
    features, normalized, regression = steps
    coef = np.asarray(regression.coef_, dtype=np.float32)
    intercept = np.asarray(regression.intercept_, dtype=np.float32)
    if coef.shape[0] == 1:  # two classes: P(classes_[1]) = sigmoid(w.x + b), as DenseHead's output
        output = keras.layers.Dense(1, activation="sigmoid", name="output")
    else:
        output = keras.layers.Dense(coef.shape[0], activation="softmax", name="output")
    maps = keras.Input(maps_shape, name="maps")
    x = POOLING[features.mode](name="pool")(maps)
    if normalized:
        x = keras.layers.UnitNormalization(name="unit_rows")(x)
    network = keras.Model(maps, output(x), name="logreg_head")
    output.set_weights([coef.T, intercept])
    return network
