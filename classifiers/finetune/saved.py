"""The fine-tuned model folder: written like every classifiers model, loaded without running code.

``MODEL/`` holds ``metadata.json`` (format ``featurestore-classifier``, kind ``finetuned``),
``model.keras`` (the whole network: preprocessing, VGG16 blocks, head) and the PNGs. The
network takes raw RGB images, so `predict` feeds it images instead of store features
(`ImageInputs` plays the extractor's part). Loading checks the archive's members and every
class in its config against the few layers such a model has, then loads in safe mode.
"""

from __future__ import annotations

import json
import shutil
import uuid
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from classifiers import _payload
from classifiers.model_file import (
    FORMAT,
    FORMAT_VERSION,
    METADATA,
    _versions,
    jsonable,
    move_into_place,
    sha256_file,
)
from featurestore.images import ImageError, load_image

KIND = "finetuned"
MODEL_FILE = "model.keras"
#: Images per forward pass when predicting: 64 x 150 px float32 images are 17 MB.
PREDICT_CHUNK = 64
#: What a fine-tuned network's config may name: the heads' classes plus VGG16's and ours.
ALLOWED_CLASSES = _payload.KERAS_CLASSES | {
    ("keras.layers", "Conv2D"),
    ("keras.layers", "MaxPooling2D"),
    ("classifiers.finetune.model", "CaffePreprocess"),
}
#: Custom-object names the config may ask Keras to look up (its registry resolves these).
ALLOWED_REGISTERED = {None, "Functional", "featurestore_finetune>CaffePreprocess"}


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


class ImageInputs:
    """What `predict` uses instead of an `Extractor` for a fine-tuned model: decoded images."""

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size

    def embed_files(self, paths: list[str | Path]) -> tuple[np.ndarray, list[str | None]]:
        """RGB images of the files (zeros for a failed one) and each file's error or None."""
        images = np.zeros((len(paths), self.input_size, self.input_size, 3), np.float32)
        errors: list[str | None] = []
        for i, path in enumerate(paths):
            try:
                images[i] = load_image(path, self.input_size)
                errors.append(None)
            except ImageError as exc:
                errors.append(str(exc))
        return images, errors


def store_images(store_path: str | Path) -> list[tuple[str, str]]:
    """(image path, label) of a store's live rows: a fine-tuned model reads the images the
    store points to, since the store's frozen features are not its input."""
    import featurestore

    store = featurestore.open_store(store_path)
    root = Path(store.manifest.source_root)
    return [(str(root / row["paths"]), row["labels"]) for row in store.live_rows()]


def check_archive(path: Path) -> None:
    """Refuse a `.keras` file with other members or classes than a fine-tuned network has."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            config = json.loads(archive.read("config.json")) if "config.json" in members else None
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise _payload.PayloadError(f"not a .keras archive ({type(exc).__name__}: {exc})") from exc
    if members != _payload.KERAS_MEMBERS:
        raise _payload.PayloadError(f"unexpected .keras members: {sorted(members ^ _payload.KERAS_MEMBERS)}")
    refused = sorted(_payload._config_classes(config) - ALLOWED_CLASSES, key=str)
    refused += [(None, name) for name in sorted(_registered_names(config) - ALLOWED_REGISTERED, key=str)]
    if refused:
        names = ", ".join(f"{module}.{name}" for module, name in refused)
        raise _payload.PayloadError(f"refusing Keras objects outside a fine-tuned VGG16: {names}")


def _registered_names(node: Any) -> set[Any]:
    if isinstance(node, dict):
        found = {node["registered_name"]} if "registered_name" in node else set()
        return found.union(*(_registered_names(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_registered_names(value) for value in node))
    return set()


def load_network(path: Path) -> Any:
    """Load a checked `model.keras` with `safe_mode=True` (our one custom layer registered)."""
    check_archive(path)
    import keras

    from classifiers.finetune import model  # noqa: F401 - registers CaffePreprocess

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise _payload.PayloadError(f"cannot be loaded by Keras ({type(exc).__name__}: {exc})") from exc


def load_finetuned(folder: str | Path, metadata: dict[str, Any]) -> FinetunedClassifier:
    """The classifier of a checked model folder (`classifiers.model_file.load_model` calls this)."""
    network = load_network(Path(folder) / MODEL_FILE)
    estimator = FinetunedClassifier()
    try:
        estimator.classes_ = np.asarray(metadata["classes"], dtype=np.int64)
        estimator.input_size_ = int(network.input_shape[1])
    except (KeyError, TypeError, ValueError) as exc:
        raise _payload.PayloadError(f"bad classes in {METADATA} ({exc!r})") from exc
    estimator.model_ = network
    return estimator


def write_model_folder(
    out: Path, network: Any, metadata: dict[str, Any], extras: Callable[[Path], Any] = lambda folder: None
) -> Path:
    """Write ``out`` whole: the network, what `extras(folder)` writes (PNGs), ``metadata.json``;
    in a temporary sibling folder renamed into place, replacing ``out`` (and its checkpoint)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        network.save(tmp / MODEL_FILE)
        extras(tmp)
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            **metadata,
            "payload": {MODEL_FILE: sha256_file(tmp / MODEL_FILE)},
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / METADATA).write_text(
            json.dumps(jsonable(full), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
