"""Model files: a folder that says what was trained on what, and loads without running code.

Layout of ``MODEL/``::

    metadata.json      what, on which features, how well; sha256 of every payload file
    estimator.skops    scikit-learn estimator or pipeline (a Keras head's slot: "passthrough")
    head.keras         the Keras network of a head
    *.png              plots written next to it by `train` (not part of the model)

A folder rather than one archive: each payload keeps the format its own safe loader expects
(skops' trust list, Keras' safe mode), metadata stays readable with `cat`, and plots sit where
people look. The folder is written under a temporary name and renamed into place, so a crash
never leaves a folder that looks complete. The payload sha256s catch corruption and naive
edits; safety against a crafted file comes from the loaders (`classifiers._payload`), since
whoever can edit a payload can edit metadata.json too.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from classifiers import _payload
from classifiers.keras_heads import FITTED_STATE, DenseHead, GapHead, _KerasHead
from featurestore.fsutil import file_sha256 as sha256_file

FORMAT = "featurestore-classifier"
FORMAT_VERSION = 1
METADATA = "metadata.json"
SKOPS_FILE = "estimator.skops"
KERAS_FILE = "head.keras"
_HEAD_CLASSES: dict[str, type[_KerasHead]] = {"DenseHead": DenseHead, "GapHead": GapHead}
_KINDS = {
    "sklearn": (SKOPS_FILE,),
    "keras": (KERAS_FILE,),
    "sklearn+keras": (SKOPS_FILE, KERAS_FILE),
    "finetuned": ("model.keras",),  # a whole image network from `featurestore finetune`
}


class ModelFileError(ValueError):
    """A model folder that cannot be written or must not be loaded; the message is one line."""


@dataclass(frozen=True)
class SavedModel:
    """A loaded model: the fitted estimator and the metadata it was saved with."""

    estimator: BaseEstimator
    metadata: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def fingerprint(self) -> dict[str, Any] | None:
        """The feature store's fingerprint dict: what `predict` needs to embed new images."""
        return self.metadata["store"].get("fingerprint")

    @property
    def store_digest(self) -> str | None:
        return self.metadata["store"].get("digest")


def jsonable(value: Any) -> Any:
    """Plain JSON types for metadata: numpy scalars and arrays unwrapped, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)  # e.g. a RandomState: recorded for people, not for rebuilding


def _head_record(head: _KerasHead) -> dict[str, Any]:
    params = head.get_params()
    if not isinstance(params["random_state"], int | type(None)):
        params["random_state"] = None  # a RandomState cannot be stored; the weights are
    state = {name: getattr(head, name) for name in FITTED_STATE}
    return {"class": type(head).__name__, "params": params, "state": jsonable(state)}


def _rebuild_head(record: Any, model: Any) -> _KerasHead:
    try:
        head = _HEAD_CLASSES[record["class"]](**record["params"])
        state = record["state"]
        head.classes_ = np.asarray(state["classes_"])
        head.n_features_in_ = int(state["n_features_in_"])
        head.input_shape_ = tuple(int(d) for d in state["input_shape_"])
        head.history_ = {str(k): [float(v) for v in vs] for k, vs in state["history_"].items()}
        best = state["best_epoch_"]
        head.best_epoch_ = None if best is None else int(best)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _payload.PayloadError(f"bad head record in {METADATA} ({exc!r})") from exc
    head.model_ = model
    return head


def save_model(
    path: str | Path,
    estimator: BaseEstimator,
    *,
    classifier: str,
    class_names: list[str] | tuple[str, ...],
    params: dict[str, Any] | None = None,
    features: str | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    store_digest: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a fitted `estimator` and what it was trained on to the folder `path`.

    `fingerprint` (the store's `Fingerprint.to_dict()`) and `store_digest` say which features
    trained it and let `predict` embed new images the same way; `training` records how (for
    example whether flipped views were added). An existing model folder is
    replaced only with `overwrite`; any other existing path is left alone.
    """
    path = Path(path)
    check_is_fitted(estimator)
    check_destination(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        head_record = None
        head = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
        if isinstance(head, _KerasHead):
            _payload.dump_keras(head.model_, tmp / KERAS_FILE)
            head_record = _head_record(head)
        if estimator is head and head_record is not None:
            kind = "keras"
        else:
            kind = "sklearn" if head_record is None else "sklearn+keras"
            to_dump = estimator
            if head_record is not None:  # the pipeline around the head, the head's slot empty
                to_dump = Pipeline([*estimator.steps[:-1], (estimator.steps[-1][0], "passthrough")])
            _payload.dump_sklearn(to_dump, tmp / SKOPS_FILE)
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "classifier": classifier,
            "params": jsonable(dict(params or {})),
            "features": features,
            "class_names": [str(name) for name in class_names],
            "classes": jsonable(estimator.classes_),
            "metrics": jsonable(dict(metrics or {})),
            "training": jsonable(dict(training or {})),
            "store": {"fingerprint": jsonable(fingerprint), "digest": store_digest},
            "head": head_record,
            "payload": {name: sha256_file(tmp / name) for name in _KINDS[kind]},
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        text = json.dumps(metadata, indent=2, allow_nan=False)
        (tmp / METADATA).write_text(text + "\n", encoding="utf-8")
        move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def check_destination(path: str | Path, overwrite: bool) -> None:
    """Raise `ModelFileError` unless a model may be written at `path`.

    A missing path is fine; an existing model folder only with `overwrite`; anything else
    (a file, a folder of photos) never, since replacing it would destroy it.
    """
    path = Path(path)
    if path.exists() and not (overwrite and (path / METADATA).is_file()):
        why = "pass overwrite to replace it" if (path / METADATA).is_file() else "and is not a model folder"
        raise ModelFileError(f"{path} already exists ({why})")


def move_into_place(tmp: Path, path: Path) -> None:
    """Replace `path` (a folder, if any) with the finished folder `tmp`."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        path.rename(old)
    tmp.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for dist in ("featurestore", "scikit-learn", "skops", "keras", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The validated metadata of model folder `path`, without loading the payload."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file"
        raise ModelFileError(f"{path} {what}; a model is a folder with {METADATA}")
    try:
        metadata = json.loads((path / METADATA).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path} is not a model folder: {METADATA} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path / METADATA} is unreadable or not JSON ({exc})") from exc
    problem = _metadata_problem(metadata)
    if problem:
        raise ModelFileError(f"{path / METADATA} is not valid model metadata: {problem}")
    return metadata


def _metadata_problem(metadata: Any) -> str | None:
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        return f"format is not {FORMAT!r}"
    if metadata.get("format_version") != FORMAT_VERSION:
        return f"unsupported format_version {metadata.get('format_version')!r}"
    kind = metadata.get("kind")
    if kind not in _KINDS:
        return f"unknown kind {kind!r}"
    payload = metadata.get("payload")
    if not isinstance(payload, dict) or set(payload) != set(_KINDS[kind]):
        return f"payload must list exactly {list(_KINDS[kind])}"
    names = metadata.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        return "class_names must be a list of at least 2 strings"
    if not isinstance(metadata.get("classifier"), str):
        return "classifier must be a string"
    if not isinstance(metadata.get("store"), dict):
        return "store must be an object"
    if kind != "sklearn" and not isinstance(metadata.get("head"), dict):
        return "a Keras head needs its head record"
    return None


def load_model(path: str | Path) -> SavedModel:
    """Load a model folder, or raise `ModelFileError` with one line saying what is wrong.

    Checks, in order: metadata.json is ours and well-formed; each payload file matches its
    sha256; the skops file holds only trusted types; the `.keras` file only our layers and
    loads in safe mode. Nothing from the folder is unpickled or executed.
    """
    path = Path(path)
    metadata = read_metadata(path)
    for name, expected in metadata["payload"].items():
        file = path / name
        if not file.is_file():
            raise ModelFileError(f"{file} is missing")
        if sha256_file(file) != expected:
            raise ModelFileError(f"{file} does not match its sha256 in {METADATA} (tampered?)")
    kind = metadata["kind"]
    try:
        if kind == "finetuned":
            from classifiers.finetune.saved import load_finetuned

            estimator = load_finetuned(path, metadata)
        elif kind == "keras":
            model = _payload.load_keras(path / KERAS_FILE)
            estimator = _rebuild_head(metadata["head"], model)
        else:
            estimator = _payload.load_sklearn(path / SKOPS_FILE)
            if kind == "sklearn+keras":
                if not isinstance(estimator, Pipeline) or estimator.steps[-1][1] != "passthrough":
                    raise _payload.PayloadError("expected a pipeline with an empty head slot")
                model = _payload.load_keras(path / KERAS_FILE)
                head = _rebuild_head(metadata["head"], model)
                estimator.steps[-1] = (estimator.steps[-1][0], head)
    except _payload.PayloadError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    if not (isinstance(estimator, BaseEstimator) and hasattr(estimator, "predict_proba")):
        raise ModelFileError(f"{path}: the payload is not a classifier with predict_proba")
    if len(getattr(estimator, "classes_", ())) > len(metadata["class_names"]):
        raise ModelFileError(f"{path}: the estimator has more classes than class_names")
    return SavedModel(estimator=estimator, metadata=metadata)
