"""The Keras side of the heads: build, seed, fit and run the networks.

Only `classifiers.keras_heads` imports this module, and only inside its methods, so that
`import classifiers` and `featurestore --help` never pay for importing TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

# TensorFlow's C++ start-up chatter is noise for a CLI; respect a value the user set.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # after the logging setting above

#: Rows per forward pass in `predict`, every pass exactly this many (the last one zero-padded).
#: oneDNN picks its matmul kernels by the batch's shape, and kernels for other shapes round
#: differently (on an AVX-512 CPU a row's probability moved by 1.8e-7 between a 60-row and a
#: 1-row call). One shape for every pass makes a row's probabilities independent of what else
#: is predicted with it, as the extractor's padded batches do for the conv base. Each pass also
#: costs ~4 ms of Keras call overhead, so the size trades small predicts against large ones: at
#: 256, the default dense head predicts 60 rows in ~25 ms and 10,000 in ~0.9 s on two cores
#: (unpadded 4,096-row passes: ~9 ms and ~0.7 s); at 1,024, 60 rows took ~55 ms.
PREDICT_BATCH = 256

#: How a fit runs its steps, by their total number: tracing the step into a graph costs
#: ~0.2 s and compiling it with XLA ~1 s more. Up to EAGER_MAX_STEPS steps, running them
#: eagerly is cheaper than tracing (the estimator checks' many tiny fits); from XLA_MIN_STEPS
#: on, XLA's fused RMSprop updates pay for themselves (an epoch of the dense head on 1,400
#: maps takes ~0.65 s on two CPU cores, against ~0.9 s through `model.fit` without XLA).
EAGER_MAX_STEPS = 12
XLA_MIN_STEPS = 600


@dataclass(frozen=True)
class Architecture:
    """What to build: the pooling in front, then an optional hidden layer, then the output."""

    pooling: str  # "flatten" or "gap"
    input_norm: float | None  # L2 norm every input row is scaled to; None: raw features
    hidden: int
    dropout: float
    learning_rate: float


def build(
    arch: Architecture, input_shape: tuple[int, ...], n_classes: int, seed: int, steps: int
) -> keras.Model:
    """A compiled network from (H, W, C) maps to class probabilities, for a fit of `steps` steps.

    Every random layer gets its own seed derived from `seed`, so that a fit is reproducible
    without touching the process-wide random generators.
    """
    inputs = keras.Input(shape=input_shape, name="features")
    if arch.pooling == "gap":
        x = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    else:
        x = keras.layers.Flatten(name="flatten")(inputs)
    if arch.input_norm is not None:
        # Unit rows times a constant: the head then sees the same scale whatever the backbone's
        # preprocessing made of the maps' magnitudes (caffe-style VGG16 maps reach ~570).
        x = keras.layers.UnitNormalization(name="unit_rows")(x)
        x = keras.layers.Rescaling(arch.input_norm, name="row_norm")(x)
    if arch.hidden > 0:
        init = keras.initializers.GlorotUniform(seed=seed)
        x = keras.layers.Dense(arch.hidden, "relu", kernel_initializer=init, name="hidden")(x)
        if arch.dropout > 0:
            x = keras.layers.Dropout(arch.dropout, seed=seed + 1, name="dropout")(x)
    init = keras.initializers.GlorotUniform(seed=seed + 2)
    if n_classes == 2:
        # One sigmoid unit for two classes: the classic head, and half the output weights.
        outputs = keras.layers.Dense(1, "sigmoid", kernel_initializer=init, name="output")(x)
        loss = "binary_crossentropy"
    else:
        outputs = keras.layers.Dense(n_classes, "softmax", kernel_initializer=init, name="output")(x)
        loss = "sparse_categorical_crossentropy"
    model = keras.Model(inputs, outputs, name=f"{arch.pooling}_head")
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=arch.learning_rate),
        loss=loss,
        metrics=["accuracy"],
        run_eagerly=steps <= EAGER_MAX_STEPS,
        jit_compile=steps >= XLA_MIN_STEPS,
    )
    return model


def _loss_and_accuracy(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Cross-entropy (clipped as Keras does) and accuracy of (N, K) probabilities."""
    picked = np.clip(proba[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.log(picked).mean()), float((proba.argmax(axis=1) == y).mean())


@contextlib.contextmanager
def _quiet_retracing() -> Iterator[None]:
    """Silence TensorFlow's "retracing" warning while fitting.

    Every head builds a fresh model, so a process that fits many (the estimator checks, the
    benchmark) traces the same Keras step function many times; TF warns about it, wrongly.
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class ArrayBatches(keras.utils.PyDataset):
    """In-memory rows in a new random order each epoch, every batch the same size.

    The last batch is topped up with rows from the start of the epoch's order: every step then
    has one shape and the step is traced once, not twice (~0.15 s per fit). Each batch's rows
    are sorted (friendlier memory reads).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.X, self.y, self._rng = X, y, rng
        n = X.shape[0]
        self.batch_size = min(batch_size, n)
        self._n_batches = -(-n // self.batch_size)
        self._order = self._draw()

    def _draw(self) -> np.ndarray:
        order = self._rng.permutation(self.X.shape[0])
        return np.concatenate([order, order[: self._n_batches * self.batch_size - len(order)]])

    def __len__(self) -> int:
        return self._n_batches

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        return self.X[rows], self.y[rows]

    def on_epoch_end(self) -> None:
        self._order = self._draw()


#: What `fit` validates on: arrays, or (maps, codes) batches it can iterate again each epoch.
Validation = tuple[np.ndarray, np.ndarray] | Iterable[tuple[np.ndarray, np.ndarray]]


@_quiet_retracing()  # a generator context manager also decorates
def fit(
    model: keras.Model,
    batches: keras.utils.PyDataset,
    *,
    validation: Validation | None,
    epochs: int,
    early_stopping: bool,
    patience: int,
    verbose: int,
) -> tuple[dict[str, list[float]], int | None]:
    """Train in place on `batches` (a new order each epoch: `on_epoch_end`); return the
    per-epoch history and the 1-based best epoch (or None).

    A loop over `train_on_batch` rather than `model.fit`: an epoch costs no data-pipeline or
    callback set-up, which halves the time of the estimator checks' many small fits and saves
    ~30% on large ones; the batches' own seeded order needs no global seeding. With a
    validation set and `early_stopping`, training stops after `patience` epochs without a lower
    validation loss and the best epoch's weights are put back, as Keras' EarlyStopping does.
    """
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if validation is not None:
        history |= {"val_loss": [], "val_accuracy": []}
    best_loss, best_weights, best_epoch, waited = np.inf, None, None, 0
    for epoch in range(1, epochs + 1):
        loss, accuracy = _train_epoch(model, batches)
        batches.on_epoch_end()
        history["loss"].append(loss)
        history["accuracy"].append(accuracy)
        if validation is not None:
            val_loss, val_accuracy = _loss_and_accuracy(*_validation_proba(model, validation))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_accuracy)
        if verbose:
            line = " - ".join(f"{key}: {values[-1]:.4f}" for key, values in history.items())
            print(f"epoch {epoch}/{epochs} - {line}", flush=True)
        if validation is None or not early_stopping:
            continue
        if val_loss < best_loss:
            best_loss, best_weights, best_epoch, waited = val_loss, model.get_weights(), epoch, 0
        else:
            waited += 1
            if waited >= patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history, best_epoch


def _validation_proba(model: keras.Model, validation: Validation) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(validation, tuple):
        return predict(model, validation[0]), validation[1]
    probas, codes = [], []
    for X, y in validation:
        probas.append(predict(model, X))
        codes.append(y)
    return np.concatenate(probas), np.concatenate(codes)


def _train_epoch(model: keras.Model, batches: keras.utils.PyDataset) -> tuple[float, float]:
    """One pass over the batches; the epoch's mean loss and accuracy (mean over batches)."""
    loss_sum = correct_sum = 0.0
    n_batches = len(batches)
    for index in range(n_batches):
        X, y = batches[index]
        logs = model.train_on_batch(X, y, return_dict=True)
        loss_sum += logs["loss"]
        correct_sum += logs["accuracy"]
    return loss_sum / n_batches, correct_sum / n_batches


def predict(model: keras.Model, X: np.ndarray) -> np.ndarray:
    """Class probabilities, (N, n_classes) float64, in padded passes of PREDICT_BATCH rows.

    A row gets bit-identical probabilities whether it is predicted alone, in a larger batch or
    at another position (see PREDICT_BATCH); `model.predict` is avoided for its overhead.
    """
    n_outputs = int(model.output_shape[-1])
    proba = np.empty((X.shape[0], n_outputs))
    for start in range(0, X.shape[0], PREDICT_BATCH):
        chunk = X[start : start + PREDICT_BATCH]
        rows = len(chunk)
        if rows < PREDICT_BATCH:
            padding = np.zeros((PREDICT_BATCH - rows, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        proba[start : start + rows] = np.asarray(model(chunk, training=False))[:rows]
    if n_outputs == 1:
        proba = np.hstack([1.0 - proba, proba])
    return proba


def load(path: str) -> keras.Model:
    """Load a `.keras` file without executing code from it (`safe_mode=True`, built-ins only)."""
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def save(model: keras.Model, path: str) -> None:
    """Save in the `.keras` zip format (config JSON + weights; no pickled code)."""
    model.save(path)
