"""Write and read the two payloads of a model file without ever unpickling or running code.

- scikit-learn estimators go through skops, which rebuilds objects from a JSON schema and
  refuses any type not on a trust list. Ours is explicit (`TRUSTED_TYPES`): the types the
  registry's pipelines contain beyond skops' defaults. A test dumps every registered
  classifier and fails if one needs a type that is not listed here.
- Keras networks use the `.keras` zip (config JSON + HDF5 weights), loaded with
  `safe_mode=True`. Before Keras reads it, the archive's members and every
  ``(module, class_name)`` in its config are checked against the handful of built-in layers
  our heads use, so a Lambda layer, a custom object or an extra member is refused even if a
  future Keras release loosened its own checks.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator


class PayloadError(Exception):
    """A payload that must not or cannot be loaded; `model_file` adds the path."""


#: Types skops does not trust by default that registry pipelines need; all are scikit-learn
#: data containers (trees, calibrators, neighbour indexes) or our stateless transform.
TRUSTED_TYPES: tuple[str, ...] = (
    "classifiers.transforms.FeatureTransform",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
)

#: The members Keras writes into a `.keras` zip.
KERAS_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})

#: Every (module, class_name) that may appear in the config of one of our heads.
KERAS_CLASSES = frozenset(
    {
        ("keras.src.models.functional", "Functional"),
        ("keras.layers", "InputLayer"),
        ("keras.layers", "Flatten"),
        ("keras.layers", "GlobalAveragePooling2D"),
        ("keras.layers", "UnitNormalization"),
        ("keras.layers", "Rescaling"),
        ("keras.layers", "Dense"),
        ("keras.layers", "Dropout"),
        ("keras", "DTypePolicy"),
        ("keras.initializers", "GlorotUniform"),
        ("keras.initializers", "Zeros"),
        ("keras.optimizers", "RMSprop"),
        (None, "__keras_tensor__"),
    }
)


def dump_sklearn(estimator: BaseEstimator, path: Path) -> None:
    """Write `estimator` with skops."""
    import skops.io as sio

    sio.dump(estimator, path)


def load_sklearn(path: Path) -> Any:
    """Load a skops file whose every untrusted type is in `TRUSTED_TYPES`, or raise."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # any failure to parse means it is not a skops file we wrote
        raise PayloadError(f"not a skops file ({type(exc).__name__}: {exc})") from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise PayloadError(f"refusing untrusted types: {', '.join(refused)}")
    try:
        return sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise PayloadError(f"cannot be loaded by skops ({type(exc).__name__}: {exc})") from exc


def dump_keras(model: Any, path: Path) -> None:
    """Write a Keras model in the `.keras` format."""
    from classifiers import _keras_models as km

    km.save(model, str(path))


def _config_classes(node: Any) -> set[tuple[str | None, str]]:
    found = set()
    if isinstance(node, dict):
        if "class_name" in node:
            found.add((node.get("module"), str(node["class_name"])))
        for value in node.values():
            found |= _config_classes(value)
    elif isinstance(node, list):
        for value in node:
            found |= _config_classes(value)
    return found


def check_keras_archive(path: Path) -> None:
    """Refuse a `.keras` file with unexpected members or classes, before Keras parses it."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            if members != KERAS_MEMBERS:
                raise PayloadError(f"unexpected .keras members: {sorted(members ^ KERAS_MEMBERS)}")
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise PayloadError(f"not a .keras archive ({type(exc).__name__}: {exc})") from exc
    refused = sorted(_config_classes(config) - KERAS_CLASSES, key=str)
    if refused:
        names = ", ".join(f"{module}.{name}" for module, name in refused)
        raise PayloadError(f"refusing Keras objects outside the head's layers: {names}")


def load_keras(path: Path) -> Any:
    """Load a checked `.keras` file with `safe_mode=True` and without its optimizer."""
    check_keras_archive(path)
    from classifiers import _keras_models as km

    try:
        return km.load(str(path))
    except Exception as exc:
        raise PayloadError(f"cannot be loaded by Keras ({type(exc).__name__}: {exc})") from exc
