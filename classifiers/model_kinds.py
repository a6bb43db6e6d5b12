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

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from classifiers.errors import PayloadError
from classifiers.inputs import InputChunk, feature_map_views, feature_maps
from classifiers.keras_heads import FITTED_STATE, DenseHead, GapHead, KerasHead
from classifiers.model_file import (
    HEAD_ARCHIVE,
    METADATA,
    ModelKind,
    SavedModel,
    jsonable,
    load_keras,
    load_skops,
    register_kind,
)

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
    """The fitted head of a head record and its loaded network."""
    try:
        head = HEAD_CLASSES[record["class"]](**record["params"])
        state = record["state"]
        head.classes_ = np.asarray(state["classes_"])
        head.n_features_in_ = int(state["n_features_in_"])
        head.input_shape_ = tuple(int(d) for d in state["input_shape_"])
        head.history_ = {str(k): [float(v) for v in vs] for k, vs in state["history_"].items()}
        best = state["best_epoch_"]
        head.best_epoch_ = None if best is None else int(best)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PayloadError(f"bad head record in {METADATA} ({exc!r})") from exc
    head.model_ = model
    return head


class FeatureMapsKind(ModelKind):
    """A model whose input is a store's main maps."""

    def inputs(self, saved: SavedModel, source: Path, weights: str) -> Iterator[InputChunk]:
        return feature_maps(saved.features_fingerprint, source, weights)

    def views(self, saved: SavedModel, source: Path, weights: str) -> Iterator[InputChunk]:
        """`inputs` with the mirror images' maps too (test-time flips)."""
        return feature_map_views(saved.features_fingerprint, source, weights)

    def metadata_problem(self, metadata: dict[str, Any]) -> str | None:
        if KERAS_FILE in self.payload and not isinstance(metadata.get("head"), dict):
            return "a Keras head needs its head record"
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
