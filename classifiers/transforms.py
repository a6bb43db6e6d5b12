"""Turn cached (N, H, W, C) feature maps into (N, D) vectors for scikit-learn models."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from classifiers.errors import ParamError

#: The modes `FeatureTransform` and the CLI's `--features` accept.
FEATURE_MODES: tuple[str, ...] = ("flatten", "avg", "max")


def as_maps(X: np.ndarray) -> np.ndarray:
    """View `X` as (N, H, W, C) maps; (N, D) vectors are read as 1x1 maps with D channels.

    One convention for every consumer: a 2-D input is what a pooled or flattened map already
    is, so pooling it again or flattening it again changes nothing.
    """
    if X.ndim == 4:
        return X
    if X.ndim == 2:
        return X.reshape(X.shape[0], 1, 1, X.shape[1])
    raise ValueError(f"expected (N, H, W, C) feature maps or (N, D) vectors, got an array of shape {X.shape}")


class FeatureTransform(TransformerMixin, BaseEstimator):
    """Map (N, H, W, C) feature maps to (N, D) vectors.

    Parameters
    ----------
    mode : {"flatten", "avg", "max"}
        ``flatten`` keeps every position (D = H*W*C, 8,192 for VGG16 at 150x150), ``avg`` and
        ``max`` pool over the spatial positions (D = C, 512). Pooled vectors are 16x smaller,
        which is what makes kernel, tree and neighbour models fast on them.

    Attributes
    ----------
    n_features_in_ : int
        ``X.shape[1]`` at fit time (scikit-learn's convention; H for maps).
    input_shape_ : tuple[int, ...]
        The per-sample shape seen at fit time; `transform` refuses any other.
    n_features_out_ : int
        D.
    """

    def __init__(self, mode: str = "flatten") -> None:
        self.mode = mode

    def _check_mode(self) -> None:
        if self.mode not in FEATURE_MODES:
            raise ParamError(
                f"FeatureTransform mode must be one of {', '.join(FEATURE_MODES)}, got {self.mode!r}"
            )

    def _validate(self, X: np.ndarray, reset: bool) -> np.ndarray:
        # float32 stays float32: 1,600 flattened maps are 52 MB in float32, twice that in float64.
        return validate_data(self, X, reset=reset, allow_nd=True, dtype=[np.float64, np.float32], copy=False)

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> FeatureTransform:
        """Check the mode and record the input shape; the transform itself has no state."""
        self._check_mode()
        X = self._validate(X, reset=True)
        maps = as_maps(X)
        self.input_shape_ = tuple(int(d) for d in X.shape[1:])
        self.n_features_out_ = int(np.prod(maps.shape[1:]) if self.mode == "flatten" else maps.shape[3])
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Return the (N, D) vectors; never writes into `X`."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has per-sample shape {tuple(X.shape[1:])}, but FeatureTransform was fitted "
                f"on {self.input_shape_}"
            )
        maps = as_maps(X)
        if self.mode == "flatten":
            return maps.reshape(maps.shape[0], -1)
        if self.mode == "avg":
            return maps.mean(axis=(1, 2), dtype=maps.dtype)
        return maps.max(axis=(1, 2))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Names ``<mode>0`` ... ``<mode>D-1``."""
        check_is_fitted(self)
        return np.asarray([f"{self.mode}{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
