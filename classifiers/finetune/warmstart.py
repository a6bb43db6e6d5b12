"""The trained head that fine-tuning starts from, checked against the store it will train on.

Starting from a trained head matters: an untrained head's large gradients would wreck the
pretrained block. So the head must be a Keras network (`dense` or `gap` on the maps) trained
on the same frozen features the store holds; anything else is refused with one line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.model_file import METADATA, ModelFileError, SavedModel, load_model, sha256_file

#: Fingerprint fields that decide what the block5_pool maps are. Stores that differ only in
#: dtype, extra layers or flip views hold the same main maps, so their heads are interchangeable.
FEATURE_IDENTITY = (
    "backbone",
    "layer",
    "input_size",
    "interpolation",
    "preprocessing",
    "weights_sha256",
    "extractor_version",
)


class FinetuneError(ValueError):
    """Fine-tuning cannot run as asked; the message is one line."""


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """A loaded head: its network, classes, and what to record about it."""

    saved: SavedModel
    path: Path
    metadata_sha256: str

    @property
    def network(self) -> Any:
        return self.saved.estimator.model_

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


def load_head(path: str | Path, store: Any) -> WarmStart:
    """Load the head at `path` and check it can warm-start on `store`, else `FinetuneError`."""
    path = Path(path)
    try:
        saved = load_model(path)
    except ModelFileError as exc:
        raise FinetuneError(f"--head: {exc}") from None
    meta = saved.metadata
    if meta["kind"] != "keras":
        pooled = f" on {meta.get('features')} features" if meta["kind"] == "sklearn+keras" else ""
        raise FinetuneError(
            f"--head {path}: a {meta['classifier']!r} model{pooled} has no Keras head on the maps to "
            "warm-start from; train one with `featurestore train STORE --classifier dense` (or gap)"
        )
    if saved.fingerprint is None:
        raise FinetuneError(f"--head {path}: the model records no store fingerprint")
    problems = feature_differences(saved.fingerprint, store.fingerprint.to_dict())
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
    return WarmStart(saved=saved, path=path, metadata_sha256=sha256_file(path / METADATA))


def feature_differences(head_fp: dict[str, Any], store_fp: dict[str, Any]) -> list[str]:
    """Readable differences between the identities of two stores' main maps."""
    problems = [
        f"{key}: {head_fp.get(key)!r} != {store_fp.get(key)!r}"
        for key in FEATURE_IDENTITY
        if head_fp.get(key) != store_fp.get(key)
    ]
    if not problems and store_fp.get("layer") != "block5_pool":
        problems.append(f"layer {store_fp.get('layer')!r}: fine-tuning needs block5_pool heads")
    return problems
