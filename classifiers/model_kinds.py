"""The model kinds that read a store's feature maps, registered into `classifiers.model_file`.

- ``sklearn``: a scikit-learn estimator or pipeline in ``estimator.skops`` (the default kind:
  whatever no other kind claims).
- ``keras``: a `KerasHead` on its own: its network in ``head.keras``, its parameters and fitted
  state in the metadata's ``head`` record.
- ``sklearn+keras``: a pipeline ending in a `KerasHead`: the pipeline with the head's slot empty
  (``"passthrough"``) in ``estimator.skops``, the head as for ``keras``.

All three read the main maps of a store whose features mean what the model's fingerprint says,
or embed new images with the backbone it records (`classifiers.inputs.feature_maps`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from classifiers.errors import PayloadError
from classifiers.inputs import InputChunk, feature_map_augmented, feature_map_views, feature_maps
from classifiers.keras_heads import FITTED_STATE, DenseHead, GapHead, KerasHead
from classifiers.model_file import (
    HEAD_ARCHIVE,
    METADATA,
    ModelKind,
    SavedModel,
    jsonable,
    load_keras,
    load_skops,
    one_line,
    register_kind,
)
from featurestore.vgg16 import MAX_INPUT_SIZE, output_shape

SKOPS_FILE = "estimator.skops"
KERAS_FILE = "head.keras"
#: The head classes a head record may name.
HEAD_CLASSES: dict[str, type[KerasHead]] = {"DenseHead": DenseHead, "GapHead": GapHead}


def dump_skops(estimator: BaseEstimator, path: Path) -> None:
    """Write a scikit-learn estimator with skops (a JSON schema of the objects, never a pickle)."""
    import skops.io as sio

    sio.dump(estimator, path)


def dump_keras(model: Any, path: Path) -> None:
    """Write a Keras network in the `.keras` format (config JSON + weights; no pickled code)."""
    from classifiers import _keras_models as km

    km.save(model, str(path))


def head_record(head: KerasHead) -> dict[str, Any]:
    """What rebuilds the estimator around a head's network: class, parameters, fitted state."""
    params = head.get_params()
    if not isinstance(params["random_state"], int | type(None)):
        params["random_state"] = None  # a RandomState cannot be stored; the weights are
    state = {name: getattr(head, name) for name in FITTED_STATE}
    return {"class": type(head).__name__, "params": params, "state": jsonable(state)}


def rebuild_head(record: Any, model: Any) -> KerasHead:
    """The fitted head of a head record (validated with the metadata) and its loaded network,
    which must take the inputs the record says."""
    try:
        head = HEAD_CLASSES[record["class"]](**record["params"])
        head._validate_params()  # the head's own parameter checks, as `fit` runs them
        state = record["state"]
        head.classes_ = np.asarray(state["classes_"])
        head.n_features_in_ = int(state["n_features_in_"])
        head.input_shape_ = tuple(int(d) for d in state["input_shape_"])
        head.history_ = {str(k): [float(v) for v in vs] for k, vs in state["history_"].items()}
        best = state["best_epoch_"]
        head.best_epoch_ = None if best is None else int(best)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PayloadError(f"bad head record in {METADATA} ({one_line(exc)})") from exc
    network_input = tuple(model.input_shape[1:])
    if math.prod(network_input) != math.prod(head.input_shape_):  # vectors reach it as (1, 1, C)
        raise PayloadError(
            f"{KERAS_FILE} takes inputs of shape {network_input}, its head record says {head.input_shape_}"
        )
    outputs, classes = int(model.output_shape[-1]), len(head.classes_)
    if outputs != classes and (outputs, classes) != (1, 2):  # two classes: one sigmoid output
        raise PayloadError(f"{KERAS_FILE} has {outputs} outputs for {classes} classes")
    head.model_ = model
    return head


#: The most numbers a head's input may hold: block1_conv1 maps of a 1024 px image.
MAX_HEAD_INPUT = MAX_INPUT_SIZE * MAX_INPUT_SIZE * 64


def head_record_problem(record: Any, metadata: dict[str, Any]) -> str | None:
    """What is wrong with a head record, field by field, or None (issue 14, item 7)."""
    if not isinstance(record, dict) or set(record) != {"class", "params", "state"}:
        return "head must be an object with class, params and state"
    if record["class"] not in HEAD_CLASSES:
        return f"head.class must be one of {', '.join(HEAD_CLASSES)}"
    if not isinstance(record["params"], dict):
        return "head.params must be an object"
    state = record["state"]
    if not isinstance(state, dict) or set(state) != set(FITTED_STATE):
        return f"head.state must be an object with {', '.join(FITTED_STATE)}"
    if state["classes_"] != metadata["classes"]:
        return "head.state.classes_ must equal classes"
    shape = state["input_shape_"]
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 3
        or not all(_is_count(d) and d >= 1 for d in shape)
        or math.prod(shape) > MAX_HEAD_INPUT
    ):
        return f"head.state.input_shape_ must be 1 to 3 positive sizes of at most {MAX_HEAD_INPUT} numbers"
    fingerprint = metadata["store"].get("fingerprint")
    if fingerprint is not None:
        maps = output_shape(fingerprint.get("layer", "block5_pool"), fingerprint.get("input_size", 150))
        if math.prod(shape) > math.prod(maps):
            return f"head.state.input_shape_ {shape} holds more numbers than the store's maps {list(maps)}"
    n_features = state["n_features_in_"]
    if not _is_count(n_features) or not 1 <= n_features <= MAX_HEAD_INPUT:
        return "head.state.n_features_in_ must be a positive integer"
    history = state["history_"]
    if not isinstance(history, dict) or not all(
        isinstance(values, list) and all(_is_number(v) for v in values) for values in history.values()
    ):
        return "head.state.history_ must map names to lists of numbers"
    best = state["best_epoch_"]
    if best is not None and (not _is_count(best) or best < 0):
        return "head.state.best_epoch_ must be null or an epoch number"
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


class FeatureMapsKind(ModelKind):
    """A model whose input is a store's main maps."""

    def inputs(self, saved: SavedModel, source: Path, weights: str) -> Iterator[InputChunk]:
        return feature_maps(saved.features_fingerprint, source, weights)

    def views(self, saved: SavedModel, source: Path, weights: str) -> Iterator[InputChunk]:
        """`inputs` with the mirror images' maps too (test-time flips)."""
        return feature_map_views(saved.features_fingerprint, source, weights)

    def augmented_views(self, saved: SavedModel, source: Path, weights: str) -> Iterator[InputChunk]:
        """`inputs` with the images' augmented views' maps too (--tta views)."""
        return feature_map_augmented(saved.features_fingerprint, source, weights)

    def metadata_problem(self, metadata: dict[str, Any]) -> str | None:
        if KERAS_FILE in self.payload:
            return head_record_problem(metadata.get("head"), metadata)
        if metadata.get("head") is not None:
            return "head must be null for a model without a Keras head"
        return None


@register_kind
class SklearnKind(FeatureMapsKind):
    name = "sklearn"
    payload = (SKOPS_FILE,)

    def write(self, estimator: Any, folder: Path) -> dict[str, Any]:
        dump_skops(estimator, folder / SKOPS_FILE)
        return {"head": None}

    def load(self, folder: Path, metadata: dict[str, Any]) -> BaseEstimator:
        return load_skops(folder / SKOPS_FILE)


@register_kind
class KerasKind(FeatureMapsKind):
    name = "keras"
    payload = (KERAS_FILE,)

    def claims(self, estimator: Any) -> bool:
        return isinstance(estimator, KerasHead)

    def write(self, estimator: Any, folder: Path) -> dict[str, Any]:
        dump_keras(estimator.model_, folder / KERAS_FILE)
        return {"head": head_record(estimator)}

    def load(self, folder: Path, metadata: dict[str, Any]) -> BaseEstimator:
        return rebuild_head(metadata["head"], load_keras(folder / KERAS_FILE, HEAD_ARCHIVE))


@register_kind
class PipelineHeadKind(FeatureMapsKind):
    name = "sklearn+keras"
    payload = (SKOPS_FILE, KERAS_FILE)

    def claims(self, estimator: Any) -> bool:
        return isinstance(estimator, Pipeline) and isinstance(estimator.steps[-1][1], KerasHead)

    def write(self, estimator: Any, folder: Path) -> dict[str, Any]:
        last, head = estimator.steps[-1]
        dump_keras(head.model_, folder / KERAS_FILE)
        # The pipeline around the head, the head's slot empty: skops stores no Keras network.
        dump_skops(Pipeline([*estimator.steps[:-1], (last, "passthrough")]), folder / SKOPS_FILE)
        return {"head": head_record(head)}

    def load(self, folder: Path, metadata: dict[str, Any]) -> BaseEstimator:
        pipeline = load_skops(folder / SKOPS_FILE)
        if not isinstance(pipeline, Pipeline) or pipeline.steps[-1][1] != "passthrough":
            raise PayloadError("expected a pipeline with an empty head slot")
        head = rebuild_head(metadata["head"], load_keras(folder / KERAS_FILE, HEAD_ARCHIVE))
        pipeline.steps[-1] = (pipeline.steps[-1][0], head)
        return pipeline
