"""Run record fields of the classifiers' jobs on a store (train, finetune): what they report.

The record itself is featurestore's (`featurestore.recorded.recorded_job`); these adapters turn
a `TrainReport` or a fine-tuning report into its counts, stages and kind-specific `extra`.
"""

from __future__ import annotations

from typing import Any

from featurestore.run_fields import stage

#: Scalar metrics kept in a record (the confusion matrix stays in the model folder).
RECORD_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss")


def _scalars(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {split: {k: m.get(k) for k in RECORD_METRICS if k in m} for split, m in metrics.items()}


def train_fields(report: Any, gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record fields of a `classifiers.training.TrainReport`, and the gate's decision if any."""
    # the rows the model was fitted on come first: "train", or "train+validation" (--fit-on)
    train_rows = int(next(iter(report.counts.values()), 0))
    extra: dict[str, Any] = {
        "classifier": report.classifier,
        "features": report.features,
        "model": str(report.model_path),
        "metrics": _scalars(report.metrics),
    }
    if gate is not None:
        extra["gate"] = gate
    return {
        "counts": {f"{split}_rows": int(n) for split, n in report.counts.items()},
        "stages": {"fit": stage(report.fit_seconds, train_rows), "total": stage(report.seconds)},
        "extra": extra,
    }


def finetune_fields(report: Any) -> dict[str, Any]:
    """Record fields of a fine-tuning report (classifiers.finetune.report)."""
    training = dict(report.training)
    return {
        "stages": {"total": stage(report.seconds)},
        "extra": {
            "model": str(report.model_path),
            "metrics": _scalars(report.metrics),
            "epochs_run": training.get("epochs_run"),
            "best_epoch": training.get("best_epoch"),
        },
    }
