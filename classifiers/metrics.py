"""The numbers `train` and the benchmark report for a fitted classifier on labelled features."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    roc_auc_score,
)

#: The scalar metrics, in the order people read them.
SCALAR_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss")


def full_proba(estimator: BaseEstimator, X: Any, n_classes: int) -> np.ndarray:
    """`predict_proba` with one column per class 0..n_classes-1.

    Labels are class indices; a class missing from the training labels gets a zero column,
    so that the metrics and the prediction CSV always see every class.
    """
    proba = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    classes = np.asarray(estimator.classes_).astype(np.int64)
    full = np.zeros((proba.shape[0], n_classes))
    full[:, classes] = proba
    return full


def metrics_from_proba(y: np.ndarray, proba: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of (N, K) probabilities against integer labels `y`; see `evaluate`."""
    y = np.asarray(y, dtype=np.int64)
    n_classes = len(class_names)
    labels = np.arange(n_classes)
    y_pred = np.argmax(proba, axis=1)
    binary = n_classes == 2
    present = np.unique(y)
    with warnings.catch_warnings():
        # Tiny or one-class splits make some metrics undefined; they are reported as None.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        result: dict[str, Any] = {
            "n_samples": int(y.shape[0]),
            "average": "binary" if binary else "macro",
            "accuracy": float(accuracy_score(y, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y, y_pred)),
            "f1": float(
                f1_score(y, y_pred, labels=labels, average="binary" if binary else "macro", zero_division=0.0)
            ),
            "roc_auc": None,
            "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1.0), labels=labels)),
            "confusion_matrix": confusion_matrix(y, y_pred, labels=labels).tolist(),
            "class_names": list(class_names),
        }
        if len(present) == n_classes:  # AUC needs every class among the true labels
            if binary:
                auc = roc_auc_score(y, proba[:, 1])
            else:
                auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels)
            result["roc_auc"] = None if math.isnan(auc) else float(auc)
    return result


def evaluate(estimator: BaseEstimator, X: Any, y: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, F1, ROC-AUC, log loss and the confusion matrix.

    `y` holds class indices into `class_names`. With two classes F1 and ROC-AUC are those of
    class 1 (``average: "binary"``); with more, macro F1 and macro one-vs-rest ROC-AUC
    (``average: "macro"``). ROC-AUC is None when a class is absent from `y`. The confusion
    matrix is a list of rows (true class) of counts per predicted class.
    """
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set")
    proba = full_proba(estimator, X, len(class_names))
    return metrics_from_proba(y, proba, class_names)


def format_metrics(metrics: dict[str, Any]) -> str:
    """A few human lines: the scalars, then the confusion matrix with class names."""
    average = f" ({metrics['average']})"
    labels = {"f1": "f1" + average, "roc_auc": "roc_auc" + average}
    parts = []
    for name in SCALAR_METRICS:
        value = metrics.get(name)
        parts.append(f"{labels.get(name, name)}: {'n/a' if value is None else f'{value:.4f}'}")
    names = metrics["class_names"]
    corner = "true/pred"
    width = max(len(n) for n in [*names, corner])
    cells = max(6, *(len(n) for n in names))
    header = f"{corner:<{width}}  " + "  ".join(f"{n:>{cells}}" for n in names)
    lines = ["  ".join(parts), header]
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>{cells}}" for c in row))
    return "\n".join(lines)
