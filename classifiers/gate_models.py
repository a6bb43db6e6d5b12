"""The retrain gate on saved models: both predict the store's test rows, then `gate.decide`.

The new model and the baseline read the same store through `prediction` (whatever their kinds:
a head on stored maps, a fine-tuned network on the images), and the rows are paired by image
path, so McNemar's test sees each test image once with both models' answers.
"""

from __future__ import annotations

from pathlib import Path

from classifiers.errors import TrainError
from classifiers.gate import DEFAULT_ALPHA, GateDecision, decide
from classifiers.model_file import SavedModel, load_model
from classifiers.prediction import iter_predictions


def predictions_on_test(
    model: SavedModel, store_path: Path, test_paths: set[str]
) -> dict[str, tuple[str, str]]:
    """{path: (true label, predicted label)} of the model on the store's labeled test rows."""
    rows = {}
    for row in iter_predictions(model, store_path):
        if row["path"] in test_paths and row["label"] and not row["error"]:
            rows[row["path"]] = (row["label"], row["predicted"])
    return rows


def gate_models(
    store_path: str | Path,
    new_model: str | Path,
    baseline: str | Path | None = None,
    *,
    min_accuracy: float | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> GateDecision:
    """Decide whether `new_model` may replace `baseline` (or pass the floor alone), on the test
    split of the store at `store_path`. Raises `TrainError` when the two cannot be compared."""
    import featurestore

    store_path = Path(store_path)
    store = featurestore.open_store(store_path)
    test_paths = {str(path) for path in store.image_paths("test")}
    new = load_model(new_model)
    new_rows = predictions_on_test(new, store_path, test_paths)
    if not new_rows:
        raise TrainError(f"{store_path}: no labeled test rows to gate the model on")
    order = sorted(new_rows)
    y_true = [new_rows[path][0] for path in order]
    new_pred = [new_rows[path][1] for path in order]
    baseline_pred = None
    if baseline is not None:
        old = load_model(baseline)
        if list(old.class_names) != list(new.class_names):
            raise TrainError(
                f"--baseline {baseline}: classes {list(old.class_names)} differ from the new model's "
                f"{list(new.class_names)}"
            )
        old_rows = predictions_on_test(old, store_path, test_paths)
        missing = len(set(order) - set(old_rows))
        if missing:
            raise TrainError(f"--baseline {baseline}: cannot predict {missing} of the {len(order)} test rows")
        baseline_pred = [old_rows[path][1] for path in order]
    return decide(y_true, new_pred, baseline_pred, min_accuracy=min_accuracy, alpha=alpha)


def gate_line(decision: GateDecision) -> str:
    """One line for the log: promote or refuse, and why."""
    verdict = "promote" if decision.promote else "REFUSED"
    return f"gate: {verdict}: {decision.reason} (n = {decision.n} test rows)"
