"""One benchmark cell: fit one variant on one fold, score it, and cache the figures as JSON.

A cell file is named by the sha256 of everything that shaped its figures (the store's content
digest, the classifier and all of its parameters, the feature transform, the fold's test ids,
the seed and fold layout, the library versions), and holds that key too: a file whose key does
not match, or that does not parse, is recomputed, never trusted. Files are written to a
temporary name and renamed, so an interrupted benchmark leaves only whole cells behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import featurestore
from classifiers.bench.config import Variant
from classifiers.errors import BenchError
from featurestore.fsutil import atomic_write_json

CELL_FORMAT = "featurestore.bench.cell/1"
#: The figures of a cell, in the order the leaderboard shows them.
METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss")
#: The fold index of the final fit on all of train+validation, scored on the test split.
TEST_FOLD = "test"


def library_versions(keras: bool) -> dict[str, str]:
    """Versions that change a cell's figures: ours, scikit-learn, numpy, and Keras for heads."""
    names = ["scikit-learn", "numpy", *(["keras", "tensorflow"] if keras else [])]
    versions = {"featurestore": featurestore.__version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def recipe(estimator: Any) -> dict[str, Any]:
    """Every parameter of the unfitted estimator, pipeline steps included, as plain JSON.

    Nested estimators become their class names, so a change to a registry pipeline (a scaler
    added, a default changed) changes the key even when the classifier's own parameters do not.
    """
    from sklearn.base import BaseEstimator

    from classifiers.model_file import jsonable

    def plain(value: Any) -> Any:
        if isinstance(value, BaseEstimator):
            return f"{type(value).__module__}.{type(value).__qualname__}"
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return jsonable(value)

    deep = estimator.get_params(deep=True)
    return {"estimator": plain(estimator), **{name: plain(deep[name]) for name in sorted(deep)}}


def cell_key(
    variant: Variant,
    estimator_recipe: dict[str, Any],
    store_digest: str,
    fold: int | str,
    fold_digest: str,
    *,
    seed: int,
    folds: int,
    repeats: int,
    keras: bool,
    flips: bool = False,
    tta: bool = False,
    augmented: bool = False,
    tta_views: bool = False,
) -> dict[str, Any]:
    """The JSON key naming a cell; `estimator_recipe` is `recipe()` of the unfitted estimator.

    Flipped training views, test-time flips, augmented training views and test-time views enter
    the key only when used, so that the cells of a plain benchmark keep their names."""
    views = {"views": {"flips": flips, "tta": tta}} if flips or tta else {}
    if augmented:
        views |= {"augmented_views": True}
    if tta_views:
        views |= {"tta_views": True}
    return views | {
        "format": CELL_FORMAT,
        "store_digest": store_digest,
        "classifier": variant.classifier,
        "params": estimator_recipe,
        "features": variant.reads,
        "fold": fold,
        "fold_digest": fold_digest,
        "seed": seed,
        "folds": folds,
        "repeats": repeats,
        "versions": library_versions(keras),
    }


def cell_path(cells_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cells_dir / f"{digest}.json"


def read_cell(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached cell at `path` if it is whole and was computed for exactly `key`."""
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cell, dict) or cell.get("key") != key or "metrics" not in cell:
        return None
    return cell


def cell_metrics(
    y: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...]
) -> tuple[dict[str, float | None], list[list[int]]]:
    """`METRICS` and the confusion matrix; F1 is macro-averaged even with two classes.

    The registry's `metrics_from_proba` gives binary F1 (of class 1) for two classes, which
    depends on which class the store lists second; a leaderboard wants the symmetric one.
    """
    from sklearn.metrics import f1_score

    from classifiers.metrics import metrics_from_proba

    figures = metrics_from_proba(y, proba, class_names)
    labels = np.arange(len(class_names))
    figures["f1_macro"] = float(
        f1_score(y, np.argmax(proba, axis=1), labels=labels, average="macro", zero_division=0.0)
    )
    return {name: figures[name] for name in METRICS}, figures["confusion_matrix"]


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs besides the arrays: which variant, which rows, where to save."""

    variant: Variant
    key: dict[str, Any]
    path: Path
    fold: int | str
    repeat: int | None
    train: np.ndarray | None  # positions into the pool; None: all of it (the final fit)
    test: np.ndarray | None  # positions into the pool; None: the test split
    flips: bool = False  # also fit on the mirror images' maps of the training rows
    tta: bool = False  # average each scored row's probabilities with its mirror image's
    augmented: bool = False  # also fit on the training rows' augmented views (extract --views K)
    tta_views: bool = False  # average each scored row's probabilities over it and its views


def _limit_threads(threads: int | None) -> None:
    """Size TensorFlow's pools before it starts in this worker (it reads these at start-up)."""
    if threads is None:
        return
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def run_cell(
    task: CellTask,
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    class_names: tuple[str, ...],
    threads: int | None,
    X_flipped: np.ndarray | None = None,
    X_test_flipped: np.ndarray | None = None,
    X_views: np.ndarray | None = None,
    X_test_views: np.ndarray | None = None,
    *,
    save: bool = True,
) -> dict[str, Any]:
    """Fit, time, score and size one cell; write its JSON file (unless `save` is False: a
    cluster worker, whose driver keeps the cell cache); return it.

    `X_flipped` and `X_test_flipped` (the mirror images' maps, row for row) serve a task with
    `flips` or `tta`; `X_views` (the pool rows' augmented views, (rows, K, ...)) a task with
    `augmented`: K more rows per training image, never of a scored one; with `X_test_views`
    (the test rows') a task with `tta_views`: each scored image averaged over it and its K views.

    `threads` (set when cells run in parallel) caps BLAS/OpenMP and TensorFlow threads in this
    worker, so that N workers use about the machine's cores rather than N times them.
    """
    from threadpoolctl import threadpool_limits

    from classifiers.model_file import payload_size
    from classifiers.registry import make_classifier
    from classifiers.tta import views_proba

    _limit_threads(threads)
    variant = task.variant
    estimator = make_classifier(variant.classifier, variant.params, variant.features)
    # Plain ndarray views of the workers' memory maps: a memmap subclass would leak into the
    # fitted model (and its pickled size) through transforms that return views.
    X, y, X_test, y_test = (np.asarray(a) for a in (X, y, X_test, y_test))
    X_fit, y_fit = (X, y) if task.train is None else (X[task.train], y[task.train])
    X_eval, y_eval = (X_test, y_test) if task.test is None else (X[task.test], y[task.test])
    n_images = len(y_fit)  # images, whatever views of them are fitted
    views = [X_eval]
    if task.flips or task.tta:
        if X_flipped is None or X_test_flipped is None:
            raise BenchError(f"{variant.name}: flipped views asked for but not loaded")
        X_flipped, X_test_flipped = np.asarray(X_flipped), np.asarray(X_test_flipped)
        if task.flips:
            mirrored = X_flipped if task.train is None else X_flipped[task.train]
            X_fit, y_fit = np.concatenate([X_fit, mirrored]), np.concatenate([y_fit, y_fit])
        if task.tta:
            views.append(X_test_flipped if task.test is None else X_flipped[task.test])
    if (task.augmented or task.tta_views) and (X_views is None or X_test_views is None):
        raise BenchError(f"{variant.name}: augmented views asked for but not loaded")
    if task.tta_views:
        scored = np.asarray(X_test_views) if task.test is None else np.asarray(X_views)[task.test]
        views.extend(scored[:, k] for k in range(scored.shape[1]))
    if task.augmented:
        picked = np.asarray(X_views) if task.train is None else np.asarray(X_views)[task.train]
        k = picked.shape[1]
        X_fit = np.concatenate([X_fit, picked.reshape(-1, *picked.shape[2:])])
        y_fit = np.concatenate([y_fit, np.repeat(y[task.train] if task.train is not None else y, k)])
    where = "the test split" if task.fold == TEST_FOLD else f"fold {task.fold}"
    with threadpool_limits(threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            started = time.perf_counter()
            estimator.fit(X_fit, y_fit)
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            proba = views_proba(estimator, views, len(class_names))
            predict_seconds = time.perf_counter() - started
        except ValueError as exc:  # bad parameter values are found by fit; name the cell
            raise BenchError(f"{variant.name} on {where}: {exc}") from None
    metrics, confusion = cell_metrics(y_eval, proba, class_names)
    notes = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught})
    cell = {
        "key": task.key,
        "variant": variant.name,
        "fold": task.fold,
        "repeat": task.repeat,
        "n_train": n_images,
        "n_fit_rows": len(y_fit),
        "n_test": len(y_eval),
        "metrics": metrics,
        "confusion_matrix": confusion,
        "fit_seconds": fit_seconds,
        "predict_seconds_per_1000": predict_seconds / max(1, len(y_eval)) * 1000.0,
        # The saved size rather than a pickle's: it is what a user ships, and it does not depend
        # on pickle's object sharing (which differs between the parent and joblib's workers).
        "model_bytes": payload_size(estimator),
        "warnings": notes[:5],
        "threads": threads,
    }
    if save:
        atomic_write_json(task.path, cell)
    return cell
