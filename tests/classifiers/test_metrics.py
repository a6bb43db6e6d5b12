"""evaluate(): the numbers on hand-checked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from classifiers.metrics import evaluate, format_metrics, full_proba


class FixedProba:
    """A fitted stand-in that returns given probabilities."""

    def __init__(self, proba: list[list[float]], classes: list[int]) -> None:
        self.proba = np.asarray(proba)
        self.classes_ = np.asarray(classes)

    def predict_proba(self, X: object) -> np.ndarray:
        return self.proba


def test_binary_metrics_by_hand() -> None:
    p1 = [0.1, 0.6, 0.4, 0.9]
    model = FixedProba([[1 - p, p] for p in p1], [0, 1])
    metrics = evaluate(model, None, np.array([0, 0, 1, 1]), ["cats", "dogs"])
    assert metrics["average"] == "binary"
    assert metrics["accuracy"] == 0.5
    assert metrics["balanced_accuracy"] == 0.5
    assert metrics["f1"] == 0.5
    assert metrics["roc_auc"] == 0.75  # 3 of the 4 (dog, cat) pairs are ranked right
    assert metrics["log_loss"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.4)) / 4)
    assert metrics["confusion_matrix"] == [[1, 1], [1, 1]]
    assert metrics["n_samples"] == 4


def test_multiclass_metrics_are_macro_averages() -> None:
    proba = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]
    metrics = evaluate(FixedProba(proba, [0, 1, 2]), None, np.array([0, 1, 2, 2]), "abc")
    assert metrics["average"] == "macro"
    assert metrics["accuracy"] == 0.75
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert 0.5 < metrics["roc_auc"] <= 1.0


def test_a_class_missing_from_training_gets_a_zero_column_and_auc_needs_every_class() -> None:
    model = FixedProba([[0.9, 0.1], [0.3, 0.7]], [0, 2])  # trained without class 1
    np.testing.assert_array_equal(full_proba(model, None, 3), [[0.9, 0, 0.1], [0.3, 0, 0.7]])
    metrics = evaluate(model, None, np.array([0, 2]), ["a", "b", "c"])
    assert metrics["accuracy"] == 1.0
    assert metrics["roc_auc"] is None  # class b never occurs in y
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_empty_sets_are_refused_and_summaries_read_well() -> None:
    model = FixedProba([[0.2, 0.8]], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, None, np.array([], dtype=int), ["cats", "dogs"])
    text = format_metrics(evaluate(model, None, np.array([1]), ["cats", "dogs"]))
    assert "accuracy: 1.0000" in text and "roc_auc (binary): n/a" in text
    assert text.splitlines()[-1].split() == ["dogs", "0", "1"]
