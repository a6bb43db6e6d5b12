"""The fine-tuned model: its estimator and its kind (``finetuned``) in `classifiers.model_file`.

``MODEL/`` holds ``metadata.json`` (format ``featurestore-classifier``, kind ``finetuned``),
``model.keras`` (the whole network: preprocessing, VGG16 blocks, head) and the PNGs. The network
takes raw RGB images, so its inputs are decoded images, of any source, a store included (its
frozen features are not this model's input). Loading checks the archive's members and every
class in its config against the few layers such a network has, then loads in safe mode.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from classifiers.errors import PayloadError
from classifiers.inputs import InputChunk, decoded_images, embedded, source_images
from classifiers.model_file import (
    HEAD_ARCHIVE,
    KerasAllowList,
    ModelKind,
    SavedModel,
    load_keras,
    register_kind,
)
from featurestore.vgg16 import MAX_INPUT_SIZE, MIN_INPUT_SIZE

KIND = "finetuned"
MODEL_FILE = "model.keras"
#: Images per forward pass when predicting: 64 x 150 px float32 images are 17 MB.
PREDICT_CHUNK = 64
#: What a fine-tuned network's config may name: the heads' layers plus VGG16's and ours, and
#: the one custom object Keras may look up in its registry (our preprocessing layer).
FINETUNED_ARCHIVE = KerasAllowList(
    what="a fine-tuned VGG16",
    classes=HEAD_ARCHIVE.classes
    | {
        ("keras.layers", "Conv2D"),
        ("keras.layers", "MaxPooling2D"),
        ("keras.layers", "GlobalMaxPooling2D"),  # the pooling of a logreg warm start
        ("classifiers.finetune.model", "CaffePreprocess"),
    },
    registered_names=HEAD_ARCHIVE.registered_names | {"featurestore_finetune>CaffePreprocess"},
)


class FinetunedClassifier(ClassifierMixin, BaseEstimator):
    """A fine-tuned network as a classifier on raw RGB images (N, S, S, 3) in 0..255.

    Made by `featurestore finetune` (``classifiers.finetune.run_finetune``), not by `fit`.
    Attributes: ``model_`` (the Keras network), ``classes_`` (label indices), ``input_size_``.
    """

    def __init__(self, *, batch_size: int = PREDICT_CHUNK) -> None:
        self.batch_size = batch_size

    def fit(self, X: Any, y: Any) -> FinetunedClassifier:
        raise NotImplementedError("fine-tuned models are trained by `featurestore finetune`")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities (N, n_classes) in the order of `classes_`."""
        from classifiers.finetune.model import predict_proba

        check_is_fitted(self)
        X = np.asarray(X, dtype=np.float32)
        size = self.input_size_
        if X.ndim != 4 or X.shape[1:] != (size, size, 3):
            raise ValueError(f"expected RGB images of shape (N, {size}, {size}, 3), got {X.shape}")
        return predict_proba(
            self.model_, (X[i : i + self.batch_size] for i in range(0, len(X), self.batch_size))
        )

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def declared_input_shape(path: Path) -> tuple[Any, ...]:
    """The image shape `model.keras`' config declares, read before Keras builds anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        [layer] = [layer for layer in config["config"]["layers"] if layer["class_name"] == "InputLayer"]
        shape = layer["config"]["batch_shape"]
        return tuple(shape[1:])
    except (zipfile.BadZipFile, OSError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"{MODEL_FILE}: no single image input in its config.json ({exc!r})") from exc


def checked_input_size(shape: tuple[Any, ...], recorded: Any) -> int:
    """The side S of an input `shape` that must be (S, S, 3), S in VGG16's range and, when the
    metadata records the store's input size, equal to it: S decides the decoded images' size."""
    size = shape[0] if shape else None
    square = isinstance(size, int) and not isinstance(size, bool) and shape == (size, size, 3)
    if not (square and MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE):
        raise PayloadError(
            f"{MODEL_FILE} takes inputs of shape {shape}; expected (S, S, 3) with S from "
            f"{MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}"
        )
    if recorded is not None and size != recorded:
        raise PayloadError(
            f"{MODEL_FILE} takes {size} px inputs; metadata.json's store.fingerprint.input_size is {recorded}"
        )
    return size


def load_network(path: Path) -> Any:
    """Load a checked `model.keras` with `safe_mode=True` (our one custom layer registered)."""
    from classifiers.finetune import model  # noqa: F401 - registers CaffePreprocess

    return load_keras(path, FINETUNED_ARCHIVE)


@register_kind
class FinetunedKind(ModelKind):
    """A whole image network from `featurestore finetune`, fed decoded images."""

    name = KIND
    payload = (MODEL_FILE,)

    def claims(self, estimator: Any) -> bool:
        return isinstance(estimator, FinetunedClassifier)

    def write(self, estimator: Any, folder: Path) -> dict[str, Any]:
        estimator.model_.save(folder / MODEL_FILE)
        return {}

    def load(self, folder: Path, metadata: dict[str, Any]) -> BaseEstimator:
        # The input size drives how much memory decoding (and Keras' build) takes: checked in
        # the config before Keras reads it, and again on the network Keras built.
        recorded = ((metadata.get("store") or {}).get("fingerprint") or {}).get("input_size")
        checked_input_size(declared_input_shape(folder / MODEL_FILE), recorded)
        network = load_network(folder / MODEL_FILE)
        estimator = FinetunedClassifier()
        estimator.classes_ = np.asarray(metadata["classes"], dtype=np.int64)  # validated
        size = checked_input_size(tuple(network.input_shape[1:]), recorded)
        outputs = int(network.output_shape[-1])
        if outputs != len(estimator.classes_) and (outputs, len(estimator.classes_)) != (1, 2):
            raise PayloadError(f"{MODEL_FILE} has {outputs} outputs for {len(estimator.classes_)} classes")
        estimator.input_size_ = size
        estimator.model_ = network
        return estimator

    def inputs(self, saved: SavedModel, source: Path, weights: str) -> Iterator[InputChunk]:
        size = saved.estimator.input_size_
        items, skipped = source_images(source)
        return embedded(items, skipped, lambda paths: decoded_images(paths, size))
