"""Keras heads on cached feature maps, as scikit-learn classifiers.

`__init__` stores keyword arguments and nothing else; `fit` validates them and learns
`classes_`, `model_`, `history_`, ...; `clone`, `get_params`, `set_params`, `score` come from
scikit-learn. TensorFlow is imported inside `fit`/`predict_proba` only (via `_keras_models`).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from classifiers.errors import ParamError
from classifiers.transforms import as_maps

#: Attributes `fit` learns, besides `model_` (what a model file stores as JSON).
FITTED_STATE = ("classes_", "n_features_in_", "input_shape_", "history_", "best_epoch_")


def _check_number(
    name: str,
    value: Any,
    kind: type,
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise `ParamError` (a ValueError, as scikit-learn wants from `fit`) naming `name` unless
    `value` is a `kind` in the interval."""
    ok = isinstance(value, kind) and not isinstance(value, bool | np.bool_)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high)
        )
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}"
        if high is not None:
            bound += f" and {'<' if high_open else '<='} {high}"
        kind_name = "an integer" if kind is numbers.Integral else "a number"
        raise ParamError(f"parameter {name} must be {kind_name} {bound}, got {value!r}")


class _Encoded:
    """(maps, labels) batches as (maps, codes) of a fitted head's classes, iterable again."""

    def __init__(self, batches: Iterable[tuple[np.ndarray, np.ndarray]], head: KerasHead) -> None:
        self.batches, self.head = batches, head

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for maps, labels in self.batches:
            yield self.head._validate_X(maps, reset=False), self.head._encode(labels, "validation_data")


class KerasHead(ClassifierMixin, BaseEstimator):
    """The base of the Keras heads: shared fit/predict; subclasses name their pooling and
    defaults. Test `isinstance(estimator, KerasHead)` for "a Keras network on the maps"."""

    _pooling = "flatten"

    def __init__(
        self,
        *,
        input_norm: float | None,
        hidden: int,
        dropout: float,
        learning_rate: float,
        epochs: int,
        batch_size: int,
        validation_fraction: float | None,
        early_stopping: bool,
        patience: int,
        random_state: int | np.random.RandomState | None,
        verbose: int,
    ) -> None:
        self.input_norm = input_norm
        self.hidden = hidden
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.patience = patience
        self.random_state = random_state
        self.verbose = verbose

    def _validate_params(self) -> None:
        if self.input_norm is not None:
            _check_number("input_norm", self.input_norm, numbers.Real, 0.0, low_open=True)
        _check_number("hidden", self.hidden, numbers.Integral, 0)
        _check_number("dropout", self.dropout, numbers.Real, 0.0, 1.0, high_open=True)
        _check_number("learning_rate", self.learning_rate, numbers.Real, 0.0, low_open=True)
        _check_number("epochs", self.epochs, numbers.Integral, 1)
        _check_number("batch_size", self.batch_size, numbers.Integral, 1)
        _check_number("patience", self.patience, numbers.Integral, 1)
        _check_number("verbose", self.verbose, numbers.Integral, 0, 2)
        if self.validation_fraction is not None:
            _check_number(
                "validation_fraction",
                self.validation_fraction,
                numbers.Real,
                0.0,
                1.0,
                low_open=True,
                high_open=True,
            )
        if not isinstance(self.early_stopping, bool | np.bool_):
            raise ParamError(f"parameter early_stopping must be true or false, got {self.early_stopping!r}")

    def _validate_X(self, X: Any, reset: bool) -> np.ndarray:
        X = validate_data(self, X, reset=reset, allow_nd=True, dtype=np.float32, copy=False)
        maps = as_maps(X)  # raises for anything but 2-D vectors or 4-D maps
        if not reset and tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has per-sample shape {tuple(X.shape[1:])}, but {type(self).__name__} was "
                f"fitted on {self.input_shape_}"
            )
        return maps

    def _encode(self, y: np.ndarray, what: str) -> np.ndarray:
        codes = np.searchsorted(self.classes_, y)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        unknown = self.classes_[codes] != y
        if unknown.any():
            raise ValueError(f"{what} has labels not seen in y: {np.unique(y[unknown]).tolist()}")
        return codes.astype(np.int64)

    def fit(
        self,
        X: Any,
        y: Any,
        validation_data: tuple[Any, Any] | None = None,
    ) -> KerasHead:
        """Train the network on `X` (N, H, W, C) maps or (N, D) vectors and labels `y`.

        `validation_data=(X_val, y_val)` drives early stopping; without it, a stratified
        `validation_fraction` of `X` is held out when that parameter is set.
        """
        from classifiers import _keras_models as km

        self._validate_params()
        X, y = validate_data(self, X, y, allow_nd=True, dtype=np.float32, copy=False)
        maps = as_maps(X)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; got 1 class ({self.classes_[0]!r})"
            )
        self.input_shape_ = tuple(int(d) for d in X.shape[1:])
        codes = self._encode(y, "y")
        # One draw from random_state seeds everything: weights, dropout, epoch order, split.
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max - 3))

        validation = None
        if validation_data is not None:
            X_val, y_val = validation_data
            X_val = self._validate_X(X_val, reset=False)
            validation = (X_val, self._encode(np.asarray(y_val), "validation_data"))
        elif self.validation_fraction is not None:
            # Stratify when every class can give at least one sample to each side.
            counts = np.bincount(codes)
            stratify = codes if counts.min() >= 2 else None
            maps, X_val, codes, y_val = train_test_split(
                maps,
                codes,
                test_size=self.validation_fraction,
                random_state=seed,
                stratify=stratify,
            )
            validation = (X_val, y_val)

        batches = km.ArrayBatches(maps, codes, int(self.batch_size), np.random.default_rng(seed))
        self._train(km, batches, maps.shape[1:], validation, seed)
        return self

    def fit_batches(
        self,
        batches: Any,
        validation: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> KerasHead:
        """Train from a `keras.utils.PyDataset` of (maps, codes) batches larger than memory.

        `batches` (e.g. `classifiers.store_dataset.StoreBatches`) gives `classes` (the sorted
        labels the codes index), `sample_shape` (H, W, C) and `rows`, and orders itself anew
        on `on_epoch_end`. `validation` yields (maps, labels) batches and is iterated once per
        epoch; `validation_fraction` does not apply (nothing is held out of a stream).
        """
        from classifiers import _keras_models as km

        self._validate_params()
        self.classes_ = np.asarray(batches.classes)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes; got {len(self.classes_)}")
        self.input_shape_ = tuple(int(d) for d in batches.sample_shape)
        self.n_features_in_ = self.input_shape_[0]
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max - 3))
        encoded = None if validation is None else _Encoded(validation, self)
        self._train(km, batches, self.input_shape_, encoded, seed)
        return self

    def _train(self, km: Any, batches: Any, input_shape: tuple[int, ...], validation: Any, seed: int) -> None:
        arch = km.Architecture(
            pooling=self._pooling,
            input_norm=None if self.input_norm is None else float(self.input_norm),
            hidden=int(self.hidden),
            dropout=float(self.dropout),
            learning_rate=float(self.learning_rate),
        )
        steps = len(batches) * self.epochs
        self.model_ = km.build(arch, tuple(input_shape), len(self.classes_), seed, steps)
        self.history_, self.best_epoch_ = km.fit(
            self.model_,
            batches,
            validation=validation,
            epochs=int(self.epochs),
            early_stopping=bool(self.early_stopping),
            patience=int(self.patience),
            verbose=int(self.verbose),
        )

    @property
    def n_epochs_(self) -> int:
        """Epochs actually run (fewer than `epochs` when early stopping fired)."""
        check_is_fitted(self)
        return len(self.history_.get("loss", []))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities (N, n_classes), columns in the order of `classes_`."""
        from classifiers import _keras_models as km

        check_is_fitted(self)
        return km.predict(self.model_, self._validate_X(X, reset=False))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class DenseHead(KerasHead):
    """The classic transfer-learning head: Flatten, Dense(hidden, relu), Dropout, output.

    The output is Dense(1, sigmoid) for two classes, Dense(K, softmax) for more. The schedule
    is the seed notebook's (RMSprop at 2e-5, 30 epochs at batch 20). One addition: each
    flattened row is L2-normalised and scaled to `input_norm` before the first Dense layer.
    The notebook's maps came from images scaled to [0, 1]; caffe-preprocessed VGG16 maps are
    ~100x larger, which made the same learning rate overshoot (train loss 5.0 after one
    epoch, validation log loss 0.38-0.46 on the cats-vs-dogs store). Unit rows x 10 bring
    validation log loss to ~0.10 at the same accuracy, and make the head indifferent to the
    backbone's preprocessing. `hidden=0` gives a linear head.

    Parameters
    ----------
    input_norm : the L2 norm every input row is scaled to; None feeds the raw features.
    hidden, dropout : size of the hidden layer (0: none) and its dropout rate.
    learning_rate, epochs, batch_size : RMSprop's learning rate and the training schedule.
    validation_fraction : held out of `X` for early stopping when `fit` gets no
        `validation_data`; None trains on all of `X` for `epochs`.
    early_stopping, patience : stop after `patience` epochs without a lower validation loss
        and restore the best epoch's weights.
    random_state : seeds initial weights, dropout, shuffling and the internal split.
    verbose : 1 prints a line per epoch.

    Attributes
    ----------
    classes_, model_ (the Keras model), history_ (per-epoch ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``), best_epoch_ (1-based, None without early stopping),
    n_epochs_, input_shape_, n_features_in_.
    """

    _pooling = "flatten"

    def __init__(
        self,
        *,
        input_norm: float | None = 10.0,
        hidden: int = 256,
        dropout: float = 0.5,
        learning_rate: float = 2e-5,
        epochs: int = 30,
        batch_size: int = 20,
        validation_fraction: float | None = None,
        early_stopping: bool = True,
        patience: int = 5,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            input_norm=input_norm,
            hidden=hidden,
            dropout=dropout,
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=batch_size,
            validation_fraction=validation_fraction,
            early_stopping=early_stopping,
            patience=patience,
            random_state=random_state,
            verbose=verbose,
        )


class GapHead(KerasHead):
    """GlobalAveragePooling2D, unit rows x `input_norm`, then Dense(hidden, relu), Dropout, output.

    Pooling first leaves 512 inputs instead of 8,192: 16x fewer weights, and a head that does
    not memorise where things sit in the frame. RMSprop at 1e-4 (5x the dense head's, for
    16x fewer inputs) trains smoothly over the 30 epochs; 1e-3 peaked by epoch 3-5 and
    stopped early. Parameters and attributes as `DenseHead`; (N, D) vectors are 1x1 maps.
    """

    _pooling = "gap"

    def __init__(
        self,
        *,
        input_norm: float | None = 10.0,
        hidden: int = 128,
        dropout: float = 0.5,
        learning_rate: float = 1e-4,
        epochs: int = 30,
        batch_size: int = 32,
        validation_fraction: float | None = None,
        early_stopping: bool = True,
        patience: int = 5,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(
            input_norm=input_norm,
            hidden=hidden,
            dropout=dropout,
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=batch_size,
            validation_fraction=validation_fraction,
            early_stopping=early_stopping,
            patience=patience,
            random_state=random_state,
            verbose=verbose,
        )
