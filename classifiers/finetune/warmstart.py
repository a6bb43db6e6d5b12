"""The trained head that fine-tuning starts from, checked against the store it will train on.

Starting from a trained head matters: an untrained head's large gradients would wreck the
pretrained block. So the head must be a Keras network (`dense` or `gap` on the maps), or a
`logreg` pipeline, which is one exactly (`linear_head.linear_head_network`), trained on the
same frozen features the store holds; anything else is refused with one line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.errors import FinetuneError, ModelFileError
from classifiers.finetune.linear_head import is_linear_pipeline, linear_head_network
from classifiers.keras_heads import KerasHead
from classifiers.model_file import METADATA, SavedModel, load_model
from classifiers.registry import final_estimator
from featurestore.fsutil import file_sha256
from featurestore.vgg16 import output_shape

__all__ = ["FinetuneError", "WarmStart", "head_network", "layer_problem", "load_head"]

#: The layer whose maps a warm-start head must have been trained on: block5's output.
HEAD_LAYER = "block5_pool"


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """A loaded head: its network on the maps, classes, and what to record about it."""

    saved: SavedModel
    path: Path
    metadata_sha256: str
    network: Any

    @property
    def classes(self) -> np.ndarray:
        """Label indices (into the store's class names) of the head's outputs."""
        return np.asarray(self.saved.estimator.classes_).astype(np.int64)

    def lineage(self) -> dict[str, Any]:
        meta = self.saved.metadata
        return {
            "path": str(self.path),
            "classifier": meta["classifier"],
            "kind": meta["kind"],
            "params": meta.get("params", {}),
            "metadata_sha256": self.metadata_sha256,
            "payload": meta["payload"],
            "store_digest": meta["store"].get("digest"),
            "metrics": meta.get("metrics", {}),
        }


def layer_problem(store: Any) -> str | None:
    """Why heads on `store`'s maps cannot warm-start fine-tuning (None: they can)."""
    layer = store.fingerprint.layer
    return None if layer == HEAD_LAYER else f"layer {layer!r}: fine-tuning needs {HEAD_LAYER} heads"


def load_head(path: str | Path, store: Any) -> WarmStart:
    """Load the head at `path` and check it can warm-start on `store`, else `FinetuneError`."""
    path = Path(path)
    try:
        saved = load_model(path)
    except ModelFileError as exc:
        raise FinetuneError(f"--head: {exc}") from None
    meta = saved.metadata
    if not isinstance(saved.estimator, KerasHead) and not is_linear_pipeline(saved.estimator):
        in_pipeline = isinstance(final_estimator(saved.estimator), KerasHead)
        pooled = f" on {meta.get('features')} features" if in_pipeline else ""
        raise FinetuneError(
            f"--head {path}: a {meta['classifier']!r} model{pooled} has no Keras head on the maps to "
            "warm-start from; train one with `featurestore train STORE --classifier dense` (or gap, logreg)"
        )
    recorded = saved.features_fingerprint
    if recorded is None:
        raise FinetuneError(f"--head {path}: the model records no store fingerprint")
    problems = recorded.feature_differences(store.fingerprint)
    if not problems and (problem := layer_problem(store)):
        problems.append(problem)
    if problems:
        raise FinetuneError(
            f"--head {path} was trained on other features than {store.path} holds: {'; '.join(problems)}"
        )
    if list(saved.class_names) != list(store.class_names):
        raise FinetuneError(
            f"--head {path} was trained on classes {saved.class_names}, the store has "
            f"{list(store.class_names)}"
        )
    if len(saved.estimator.classes_) < 2:
        raise FinetuneError(f"--head {path}: the head knows fewer than 2 classes")
    network = head_network(saved.estimator, store)
    return WarmStart(saved=saved, path=path, metadata_sha256=file_sha256(path / METADATA), network=network)


def head_network(estimator: Any, store: Any) -> Any:
    """The Keras network of a head fitted on `store`'s block5 maps: a Keras head's own, or a
    logreg pipeline's equivalent."""
    if isinstance(estimator, KerasHead):
        return estimator.model_
    return linear_head_network(estimator, output_shape(HEAD_LAYER, store.fingerprint.input_size))
