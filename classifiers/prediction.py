"""Predict with a saved model on an image, a folder of images, or a feature store.

New images are embedded with the backbone, input size and preprocessing recorded in the
model's fingerprint; a store is used only if its fingerprint is the model's. A file that
cannot be read or decoded gets a row with its reason instead of stopping the run.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.metrics import full_proba
from classifiers.model_file import SavedModel, load_model

#: Images embedded per extractor call: bounds memory (150x150 RGB float32: 270 KB each).
EMBED_CHUNK = 256
#: Store rows classified per read.
STORE_CHUNK = 4096


class PredictError(ValueError):
    """Prediction cannot run on this source with this model; the message is one line."""


def columns(class_names: Sequence[str]) -> list[str]:
    """CSV columns, in order."""
    return ["path", "label", "predicted", "probability", *(f"p_{c}" for c in class_names), "error"]


def _rows(
    saved: SavedModel,
    paths: Sequence[str],
    labels: Sequence[str],
    features: np.ndarray,
    errors: Sequence[str | None],
) -> list[dict[str, Any]]:
    names = saved.class_names
    ok = np.array([error is None for error in errors], dtype=bool)
    proba = np.zeros((len(paths), len(names)))
    if ok.any():
        proba[ok] = full_proba(saved.estimator, features[ok], len(names))
    rows = []
    for i, path in enumerate(paths):
        row: dict[str, Any] = {"path": path, "label": labels[i]}
        if ok[i]:
            best = int(np.argmax(proba[i]))
            row |= {"predicted": names[best], "probability": float(proba[i, best])}
            row |= {f"p_{c}": float(p) for c, p in zip(names, proba[i], strict=True)}
            row["error"] = ""
        else:
            row |= {"predicted": "", "probability": ""}
            row |= {f"p_{c}": "" for c in names}
            row["error"] = errors[i]
        rows.append(row)
    return rows


def _main_maps_only(fingerprint: dict[str, Any]) -> Any:
    """The fingerprint of just the main maps, which is all a model reads.

    Flipped views and extra layers do not change the main maps: a store extracted with or
    without them is equally usable, and new images need not pay for computing them.
    """
    import featurestore

    return featurestore.Fingerprint.from_dict({**fingerprint, "flip_views": False, "extra_layers": []})


def _is_store(source: Path) -> bool:
    import featurestore

    return featurestore.is_store(source)


def _store_rows(saved: SavedModel, source: Path) -> Iterator[dict[str, Any]]:
    import featurestore

    store = featurestore.open_store(source)
    if saved.fingerprint is None:
        raise PredictError(f"{source}: the model records no store fingerprint to compare with")
    expected = _main_maps_only(saved.fingerprint)
    found = _main_maps_only(store.fingerprint.to_dict())
    if found.digest != expected.digest:
        differences = "; ".join(found.differences(expected))
        raise PredictError(f"{source}: store features differ from the model's ({differences})")
    for batch in store.iter_batches(None, batch_size=STORE_CHUNK):
        labels = [store.class_names[i] if i >= 0 else "" for i in batch.labels]
        yield from _rows(saved, list(batch.paths), labels, batch.features, [None] * len(batch))


def _image_rows(saved: SavedModel, source: Path, weights: str) -> Iterator[dict[str, Any]]:
    from featurestore.sources import discover

    if saved.fingerprint is None:
        raise PredictError("the model records no store fingerprint: cannot embed new images")
    if _is_store(source):  # only a fine-tuned model gets here: it reads the store's images
        from classifiers.finetune.saved import store_images

        items = store_images(source)
        skipped: Sequence[tuple[str, str]] = ()
    elif source.is_file() and source.suffix.lower() != ".csv":
        items = [(str(source), "")]
        skipped = ()
    else:  # a folder (labeled or not) or a CSV manifest
        found = discover(source)
        items = [(str(image.path), image.label or "") for image in found.images]
        skipped = found.skipped
    extractor = _extractor(saved, weights)
    for start in range(0, len(items), EMBED_CHUNK):
        chunk = items[start : start + EMBED_CHUNK]
        paths = [path for path, _ in chunk]
        features, errors = extractor.embed_files(paths)
        yield from _rows(saved, paths, [label for _, label in chunk], features, errors)
    for relpath, reason in skipped:  # found but never readable as an image
        yield from _rows(saved, [str(source / relpath)], [""], np.zeros((1,)), [reason])


def _extractor(saved: SavedModel, weights: str) -> Any:
    """What turns image files into model input: the recorded backbone, or, for a fine-tuned
    model (its network starts at the pixels, with its own weights), the decoded images."""
    if saved.metadata["kind"] == "finetuned":
        from classifiers.finetune.saved import ImageInputs

        return ImageInputs(saved.estimator.input_size_)
    import featurestore

    return featurestore.Extractor.from_fingerprint(_main_maps_only(saved.fingerprint), weights=weights)


def iter_predictions(
    model: str | Path | SavedModel, source: str | Path, *, weights: str = "imagenet"
) -> Iterator[dict[str, Any]]:
    """Rows (see `columns`) for every image of `source`, in chunks; see `predict_rows`."""
    saved = model if isinstance(model, SavedModel) else load_model(model)
    source = Path(source)
    if not source.exists():
        raise PredictError(f"{source} does not exist")
    if _is_store(source) and saved.metadata["kind"] != "finetuned":
        yield from _store_rows(saved, source)
    else:
        yield from _image_rows(saved, source, weights)


def predict_rows(
    model_path: str | Path | SavedModel, source: str | Path, *, weights: str = "imagenet"
) -> list[dict[str, Any]]:
    """Predictions for SOURCE: an image file, a folder (class folders or not), a CSV manifest
    or a feature store.

    Each row has ``path``, ``label`` (the true class when the source says, else ""),
    ``predicted`` (class name), ``probability`` (of the predicted class), ``p_<class>`` per
    class and ``error`` ("" or why the image could not be used). `weights` names the backbone
    weights for new images (``imagenet`` or a file); they must reproduce the model's
    fingerprint. Raises `PredictError`, `ModelFileError`, `featurestore.StoreError`,
    `featurestore.ExtractorError` or `featurestore.sources.SourceError`.
    """
    return list(iter_predictions(model_path, source, weights=weights))


def write_csv(
    rows: Sequence[dict[str, Any]] | Iterator[dict[str, Any]], class_names: Sequence[str], path: str | Path
) -> int:
    """Write rows with a header; returns the number of rows written."""
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns(class_names))
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    return count
