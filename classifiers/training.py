"""Train a registered classifier on a feature store's splits, evaluate it, save it with plots."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from classifiers import streaming
from classifiers.errors import TrainError
from classifiers.fit_data import Split, fit_data
from classifiers.keras_heads import KerasHead
from classifiers.metrics import format_metrics, metrics_from_proba
from classifiers.model_file import check_destination, jsonable, save_model
from classifiers.plots import plot_confusion_matrix, plot_training_curves
from classifiers.registry import current_params, default_features, final_estimator, make_classifier
from classifiers.tta import check_tta, evaluate_views
from featurestore.errors import FeaturestoreError

__all__ = ["EVAL_SPLITS", "TrainError", "TrainReport", "fit_estimator", "train_from_store"]

#: The store's splits `train` reports on, in order.
EVAL_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class TrainReport:
    """What `train_from_store` did: metrics per split, files written, time taken."""

    classifier: str
    features: str | None
    params: dict[str, Any]
    model_path: Path
    metrics: dict[str, dict[str, Any]]
    plots: dict[str, Path]
    counts: dict[str, int]
    fit_seconds: float
    seconds: float
    training: dict[str, Any] = field(default_factory=dict)  # flipped views; epochs (heads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: paths as strings."""
        return jsonable(
            {
                "classifier": self.classifier,
                "features": self.features,
                "params": self.params,
                "model_path": str(self.model_path),
                "metrics": self.metrics,
                "plots": {name: str(path) for name, path in self.plots.items()},
                "counts": self.counts,
                "fit_seconds": round(self.fit_seconds, 3),
                "seconds": round(self.seconds, 3),
                "training": self.training,
            }
        )

    def summary(self) -> str:
        """Human lines for the CLI: sizes and time, then each split's metrics."""
        sizes = ", ".join(f"{split} {n}" for split, n in self.counts.items())
        lines = [
            f"{self.classifier} (features: {self.features or 'maps'}) trained on {sizes} "
            f"in {self.fit_seconds:.1f} s; model: {self.model_path}"
        ]
        lines.append(", ".join(f"{key}: {value}" for key, value in self.training.items()))
        for split, metrics in self.metrics.items():
            lines += [f"[{split}]", format_metrics(metrics)]
        return "\n".join(lines)


def fit_estimator(
    estimator: BaseEstimator,
    X: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> BaseEstimator:
    """Fit, handing `validation` to a Keras head (through any pipeline steps in front of it).

    scikit-learn models ignore `validation` here (it is only reported on): none of the
    registered ones selects a model or stops on a validation set.
    """
    head = final_estimator(estimator)
    if not isinstance(head, KerasHead) or validation is None:
        return estimator.fit(X, y)
    X_val, y_val = validation
    if isinstance(estimator, Pipeline):
        # Pipeline does not pass fit parameters through its transforms; do it by hand.
        front = estimator[:-1]
        X = front.fit_transform(X, y)
        X_val = front.transform(X_val)
    head.fit(X, y, validation_data=(X_val, y_val))
    return estimator


def train_from_store(
    store_path: str | Path,
    classifier: str,
    out: str | Path,
    params: dict[str, Any] | None = None,
    features: str | None = None,
    *,
    flips: bool | None = None,
    fit_on: str = "train",
    tta: str = "none",
    views: bool | None = None,
    overwrite: bool = False,
    stream: bool | None = None,
    say: Callable[[str], None] | None = None,
) -> TrainReport:
    """Train `classifier` on the store's train split and save it to the folder `out`.

    The validation split drives early stopping of Keras heads; validation and test are
    evaluated and their metrics saved in the model. Writes ``out/confusion_matrix_<split>.png``
    and, for Keras heads, ``out/training_curves.png``. Unlabeled rows are ignored.

    `flips` adds the maps of the horizontally flipped training images (a store extracted with
    ``--flip-views``) to the training rows: free augmentation, since a mirrored cat is a cat.
    None uses them whenever the store has them. Validation and test are always scored on the
    images as they are, like new images at prediction time, unless `tta` is ``"flip"``: then
    each scored image's probabilities are averaged with its flipped view's (a store with
    flipped views), and the model records it so that `predict` does the same.

    `views` adds the maps of the training images' cached augmented views (a store extracted
    with ``--views K``): K more rows per training image, never of a validation or test image;
    None uses them whenever the store has them. `tta` ``"views"`` averages each scored image's
    probabilities over it and its K views.

    `fit_on` ``"train+validation"`` fits the final model on both splits (a Keras head stops
    early on an inner split of them) and scores test only (`classifiers.fit_data`).

    `stream` reads the store in batches instead of whole splits (`classifiers.streaming`);
    None (the default) streams when the maps would not fit in the available memory. When it
    streams, `say` gets one line that says so and why.

    Raises `TrainError`, `ParamError`, `ModelFileError` or `featurestore.StoreError` (all
    `featurestore.FeaturestoreError`).
    """
    import featurestore

    started = time.perf_counter()
    estimator = make_classifier(classifier, params, features)  # bad names fail before any read
    check_destination(out, overwrite)  # and an occupied destination before any training
    store = featurestore.open_store(store_path)
    class_names = tuple(store.class_names)
    if len(class_names) < 2:
        raise TrainError(
            f"{store_path}: a classifier needs at least 2 classes, the store has {len(class_names)}"
        )
    has_flips = bool(store.fingerprint.flip_views)
    if flips and not has_flips:
        raise TrainError(f"{store_path}: no flipped views to train on (extract with --flip-views)")
    if check_tta(tta) == "flip" and not has_flips:
        raise TrainError(f"{store_path}: --tta flip needs the flipped views of a --flip-views store")
    n_views = store.fingerprint.views
    if (views or tta == "views") and not n_views:
        raise TrainError(f"{store_path}: no augmented views to train or score on (extract with --views K)")
    use_flips = has_flips if flips is None else flips
    use_views = n_views > 0 if views is None else views
    train_sources = [("train", False), *([("train", True)] if use_flips else [])]
    # the augmented views are read as whole splits: counted K times in the memory estimate
    view_sources = [("train", False)] * n_views if use_views else []
    decision = streaming.decide(
        streaming.maps_bytes(
            store, [*train_sources, *view_sources, *((split, False) for split in EVAL_SPLITS)]
        ),
        "the train, validation and test maps",
        stream,
    )
    if decision.stream:
        if fit_on != "train" or tta != "none" or (views and use_views):
            raise TrainError(
                f"{store_path}: --fit-on {fit_on}, --tta {tta} and --views read whole splits; they "
                "are not streamed (--no-stream)"
            )
        if use_views and say is not None:
            say(f"{store_path}: streamed, so the augmented views are left out (--no-stream uses them)")
        use_views = False
        if say is not None:
            say(decision.message)
        fit_seconds, metrics, counts, notes = _fit_streamed(
            estimator, store, train_sources, classifier, class_names, decision, store_path
        )
    else:
        fit_seconds, metrics, counts, notes = _fit_in_memory(
            estimator, store, use_flips, classifier, class_names, store_path, fit_on, tta, use_views
        )
    effective_features = features or default_features(classifier)
    chosen = jsonable(current_params(estimator))
    training: dict[str, Any] = {
        "flipped_views": use_flips,
        "augmented_views": n_views if use_views else 0,
        "streamed": decision.stream,
        **notes,
        "tta": tta,
    }
    head = final_estimator(estimator)
    if isinstance(head, KerasHead):
        training |= {"epochs_run": head.n_epochs_, "best_epoch": head.best_epoch_}
    plots: dict[str, Path] = {}  # drawn inside the model folder before it is moved into place
    model_path = save_model(
        out,
        estimator,
        classifier=classifier,
        class_names=class_names,
        params=chosen,
        features=effective_features,
        metrics=metrics,
        training=training,
        fingerprint=store.fingerprint.to_dict(),
        store_digest=store.digest,
        extra={"tta": tta},
        extras=lambda folder: plots.update(_plots(estimator, metrics, class_names, folder, classifier)),
        overwrite=overwrite,
    )
    return TrainReport(
        classifier=classifier,
        features=effective_features,
        params=chosen,
        model_path=model_path,
        metrics=metrics,
        plots={name: model_path / path.name for name, path in plots.items()},
        counts=counts,
        fit_seconds=fit_seconds,
        seconds=time.perf_counter() - started,
        training=training,
    )


def _views(rows: Split, tta: str) -> list[np.ndarray]:
    """The maps a scored split is averaged over: the images', and their mirrors' or views'."""
    if tta == "flip" and rows.flipped is not None:
        return [rows.X, rows.flipped]
    if tta == "views" and rows.views is not None:
        return [rows.X, *(rows.views[:, k] for k in range(rows.views.shape[1]))]
    return [rows.X]


def _check_classes(y: np.ndarray, store_path: str | Path, fit_on: str = "train") -> None:
    present = np.unique(y)
    if len(present) < 2:
        raise TrainError(
            f"{store_path}: the {fit_on} split has labeled rows of {len(present)} class(es); "
            "a classifier needs at least 2"
        )


def _fit_in_memory(
    estimator: BaseEstimator,
    store: Any,
    use_flips: bool,
    classifier: str,
    class_names: tuple[str, ...],
    store_path: str | Path,
    fit_on: str = "train",
    tta: str = "none",
    use_views: bool = False,
) -> tuple[float, dict[str, dict[str, Any]], dict[str, int], dict[str, Any]]:
    """Whole-split reads (contiguous slices, fast), fit, evaluate: (fit seconds, metrics, rows,
    notes for the training record); the rows come from `classifiers.fit_data`."""
    keras = isinstance(final_estimator(estimator), KerasHead)
    data = fit_data(store, fit_on, flips=use_flips, tta=tta, early_stopping=keras, views=use_views)
    _check_classes(data.y, store_path, fit_on)
    with _refused_settings(classifier):
        fit_started = time.perf_counter()
        fit_estimator(estimator, data.X, data.y, validation=data.validation)
        fit_seconds = time.perf_counter() - fit_started
        metrics = {
            split: evaluate_views(estimator, _views(rows, tta), rows.y, class_names)
            for split, rows in data.scored.items()
        }
    counts = {fit_on: data.info["fit_images"], **{split: len(rows) for split, rows in data.scored.items()}}
    return fit_seconds, metrics, counts, data.info


def _fit_streamed(
    estimator: BaseEstimator,
    store: Any,
    train_sources: list[tuple[str, bool]],
    classifier: str,
    class_names: tuple[str, ...],
    decision: streaming.StreamDecision,
    store_path: str | Path,
) -> tuple[float, dict[str, dict[str, Any]], dict[str, int], dict[str, Any]]:
    """The same, reading the store in batches (`classifiers.streaming`); also notes for the
    model's training record (a head's one-time copy of its splits, in seconds)."""
    notes: dict[str, Any] = {}
    counts = {split: streaming.labeled_rows(store, split) for split in ("train", *EVAL_SPLITS)}
    per_class = streaming.split_counts(store)["train"]
    _check_classes(np.array([label for label in class_names if per_class.get(label)]), store_path)
    with _refused_settings(classifier):
        fit_started = time.perf_counter()
        validate = counts["validation"] > 0
        if isinstance(estimator, KerasHead):  # a head on the maps: a shuffled PyDataset
            from classifiers.store_dataset import fit_head

            copy_seconds = fit_head(estimator, store, train_sources, validate=validate)
            notes["stream_copy_seconds"] = round(copy_seconds, 3)
        else:  # a pipeline: transformed (pooled) while reading
            budget = int(streaming.STREAM_FRACTION * decision.available)
            streaming.fit_streamed(
                estimator, store, train_sources, validate=validate, budget=budget, classifier=classifier
            )
        fit_seconds = time.perf_counter() - fit_started
        metrics = {}
        for split in EVAL_SPLITS:
            if counts[split]:
                proba, y = streaming.split_proba(estimator, store, split, len(class_names))
                metrics[split] = metrics_from_proba(y, proba, class_names)
    return fit_seconds, metrics, counts, notes


def _plots(
    estimator: BaseEstimator,
    metrics: dict[str, dict[str, Any]],
    class_names: tuple[str, ...],
    folder: Path,
    classifier: str,
) -> dict[str, Path]:
    """Write the PNGs into `folder`; return their paths."""
    plots = {}
    for split, split_metrics in metrics.items():
        plots[f"confusion_matrix_{split}"] = plot_confusion_matrix(
            split_metrics["confusion_matrix"],
            class_names,
            folder / f"confusion_matrix_{split}.png",
            title=f"{classifier}: {split}",
        )
    head = final_estimator(estimator)
    if isinstance(head, KerasHead):
        plots["training_curves"] = plot_training_curves(
            head.history_, folder / "training_curves.png", title=classifier, best_epoch=head.best_epoch_
        )
    return plots


@contextlib.contextmanager
def _refused_settings(classifier: str) -> Iterator[None]:
    """scikit-learn checks parameter values against the data when `fit` (or `predict`) runs and
    refuses them with a ValueError, its convention (``C=-1``, more neighbours than rows): that
    is a setting the user chose, so it becomes a one-line `TrainError` naming the classifier."""
    try:
        yield
    except FeaturestoreError:
        raise
    except ValueError as exc:
        raise TrainError(f"{classifier} cannot be trained with these settings: {exc}") from exc
