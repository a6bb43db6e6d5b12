"""The retrain gate on synthetic predictions of one shared test split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifiers.gate import decide


def predictions(
    n: int, accuracy: float, y: np.ndarray, rng: np.random.Generator, classes: int = 2
) -> np.ndarray:
    """Predictions right on a random `accuracy` share of the rows, wrong (another class) elsewhere."""
    right = rng.random(n) < accuracy
    return np.where(right, y, (y + rng.integers(1, classes, n)) % classes)


@pytest.fixture
def rows() -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(7)
    return rng.integers(0, 3, 2000), rng


def test_a_clearly_worse_model_is_refused(rows) -> None:
    y, rng = rows
    baseline = predictions(len(y), 0.95, y, rng, 3)
    worse = predictions(len(y), 0.90, y, rng, 3)
    decision = decide(y, worse, baseline)
    assert not decision.promote and "significantly worse" in decision.reason
    assert decision.p_worse < 0.001 and decision.difference < 0
    low, high = decision.difference_ci95
    assert low < decision.difference < high < 0


def test_a_clearly_better_model_is_promoted_even_when_better_is_required(rows) -> None:
    y, rng = rows
    baseline = predictions(len(y), 0.90, y, rng, 3)
    better = predictions(len(y), 0.95, y, rng, 3)
    decision = decide(y, better, baseline, require_better=True)
    assert decision.promote and "significantly better" in decision.reason


def test_a_tie_is_promoted_unless_better_is_required(rows) -> None:
    y, rng = rows
    baseline = predictions(len(y), 0.93, y, rng, 3)
    # The same model with 10 rows flipped each way: paired, so a tie, not noise.
    tied = baseline.copy()
    right, wrong = np.flatnonzero(baseline == y), np.flatnonzero(baseline != y)
    tied[right[:10]] = (y[right[:10]] + 1) % 3
    tied[wrong[:10]] = y[wrong[:10]]
    assert decide(y, tied, baseline).promote
    decision = decide(y, tied, baseline, require_better=True)
    assert not decision.promote and "not significantly better" in decision.reason
    assert (decision.only_new_right, decision.only_baseline_right) == (10, 10)
    assert decision.p_worse == pytest.approx(decision.p_better) and decision.p_worse > 0.5


def test_the_floor_applies_with_or_without_a_baseline(rows) -> None:
    y, rng = rows
    new = predictions(len(y), 0.80, y, rng, 3)
    assert not decide(y, new, min_accuracy=0.9).promote
    assert "below the floor" in decide(y, new, predictions(len(y), 0.5, y, rng, 3), min_accuracy=0.9).reason
    alone = decide(y, new, min_accuracy=0.7)
    assert alone.promote and alone.baseline_accuracy is None


def test_identical_models_tie_with_p_one(rows) -> None:
    y, rng = rows
    same = predictions(len(y), 0.9, y, rng, 3)
    decision = decide(y, same, same)
    assert decision.promote and decision.p_worse == 1.0 and decision.difference == 0


def test_the_false_refusal_rate_of_equal_models_is_about_alpha() -> None:
    """Two models of the same accuracy, independent errors: refused about alpha of the time."""
    rng = np.random.default_rng(0)
    refused = 0
    trials = 400
    for _ in range(trials):
        y = rng.integers(0, 2, 300)
        refused += not decide(y, predictions(300, 0.85, y, rng), predictions(300, 0.85, y, rng)).promote
    assert refused / trials <= 0.08  # one-sided at 0.05; exact tests are conservative


def test_bad_inputs_are_refused_and_the_decision_is_json(rows) -> None:
    y, _ = rows
    with pytest.raises(ValueError, match="same rows"):
        decide(y, y[:-1])
    with pytest.raises(ValueError, match="same rows"):
        decide(y, y, y[:-1])
    with pytest.raises(ValueError, match="min_accuracy"):
        decide(y, y, min_accuracy=95)
    assert json.loads(json.dumps(decide(y, y, y).to_dict()))["promote"] is True
