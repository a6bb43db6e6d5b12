"""Predict with a saved model on an image, a folder of images, a CSV manifest or a feature store.

The model's kind turns the source into its inputs (`SavedModel.inputs`): models on store
features read a store whose features mean what theirs do, or embed new images with the
backbone, input size and preprocessing their fingerprint records; a fine-tuned network reads
the images themselves. A file that cannot be read or decoded gets a row with its reason
instead of stopping the run.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.errors import PredictError
from classifiers.inputs import InputChunk
from classifiers.model_file import SavedModel, load_model
from classifiers.model_kinds import FeatureMapsKind
from classifiers.tta import check_tta, views_proba
from featurestore.fsutil import atomic_file

__all__ = ["PredictError", "columns", "iter_predictions", "model_tta", "predict_rows", "write_csv"]


def columns(class_names: Sequence[str]) -> list[str]:
    """CSV columns, in order."""
    return ["path", "label", "predicted", "probability", *(f"p_{c}" for c in class_names), "error"]


def _rows(saved: SavedModel, chunk: InputChunk) -> list[dict[str, Any]]:
    names = saved.class_names
    ok = np.array([error is None for error in chunk.errors], dtype=bool)
    proba = np.zeros((len(chunk), len(names)))
    if ok.any():
        views = [chunk.inputs[ok]] if chunk.flipped is None else [chunk.inputs[ok], chunk.flipped[ok]]
        if chunk.augmented is not None:
            views += [chunk.augmented[ok][:, k] for k in range(chunk.augmented.shape[1])]
        proba[ok] = views_proba(saved.estimator, views, len(names))
    rows = []
    for i, path in enumerate(chunk.paths):
        row: dict[str, Any] = {"path": path, "label": chunk.labels[i]}
        if ok[i]:
            best = int(np.argmax(proba[i]))
            row |= {"predicted": names[best], "probability": float(proba[i, best])}
            row |= {f"p_{c}": float(p) for c, p in zip(names, proba[i], strict=True)}
            row["error"] = ""
        else:
            row |= {"predicted": "", "probability": ""}
            row |= {f"p_{c}": "" for c in names}
            row["error"] = chunk.errors[i]
        rows.append(row)
    return rows


def model_tta(saved: SavedModel, tta: str | None = None) -> str:
    """The test-time augmentation to predict with: `tta`, else the one the model was trained
    and scored with (its metadata's ``tta``; "none" for models saved before it existed)."""
    chosen = check_tta(tta if tta is not None else str(saved.metadata.get("tta") or "none"))
    if chosen != "none" and not isinstance(saved.kind, FeatureMapsKind):
        raise PredictError(
            f"--tta {chosen} applies to models on store features, not to a {saved.kind.name} model"
        )
    return chosen


def iter_predictions(
    model: str | Path | SavedModel,
    source: str | Path,
    *,
    weights: str = "imagenet",
    tta: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows (see `columns`) for every image of `source`, in chunks; see `predict_rows`."""
    saved = model if isinstance(model, SavedModel) else load_model(model)
    chosen = model_tta(saved, tta)
    source = Path(source)
    if not source.exists():
        raise PredictError(f"{source} does not exist")
    if chosen == "flip":
        assert isinstance(saved.kind, FeatureMapsKind)  # model_tta checked it
        chunks = saved.kind.views(saved, source, weights)
    elif chosen == "views":
        assert isinstance(saved.kind, FeatureMapsKind)
        chunks = saved.kind.augmented_views(saved, source, weights)
    else:
        chunks = saved.inputs(source, weights=weights)
    for chunk in chunks:
        yield from _rows(saved, chunk)


def predict_rows(
    model_path: str | Path | SavedModel,
    source: str | Path,
    *,
    weights: str = "imagenet",
    tta: str | None = None,
) -> list[dict[str, Any]]:
    """Predictions for SOURCE: an image file, a folder (class folders or not), a CSV manifest
    or a feature store.

    Each row has ``path``, ``label`` (the true class when the source says, else ""),
    ``predicted`` (class name), ``probability`` (of the predicted class), ``p_<class>`` per
    class and ``error`` ("" or why the image could not be used). `weights` names the backbone
    weights for new images (``imagenet`` or a file); they must reproduce the model's
    fingerprint. `tta` "flip" averages each image's probabilities with its mirror image's (the
    flipped views of a --flip-views store, or new images embedded flipped too); None follows
    the model (`model_tta`). Raises `PredictError`, `ModelFileError`, `featurestore.StoreError`,
    `featurestore.ExtractorError` or `featurestore.sources.SourceError` (all
    `featurestore.FeaturestoreError`).
    """
    return list(iter_predictions(model_path, source, weights=weights, tta=tta))


def write_csv(
    rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]], class_names: Sequence[str], path: str | Path
) -> int:
    """Write rows with a header, whole or not at all; returns the number of rows written."""
    count = 0
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns(class_names))
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def summarize(rows: Sequence[dict[str, Any]], out: str | Path) -> dict[str, Any]:
    """Counts, and accuracy over the rows whose label is one of the model's classes."""
    scored = [row for row in rows if not row["error"] and row["label"]]
    labeled = [row for row in scored if f"p_{row['label']}" in row]
    correct = sum(row["predicted"] == row["label"] for row in labeled)
    return {
        "rows": len(rows),
        "errors": sum(1 for row in rows if row["error"]),
        "labeled": len(labeled),
        "accuracy": correct / len(labeled) if labeled else None,
        "out": str(out),
    }
