"""Fine-tuning: unfreeze the top of VGG16, warm-start from a trained head, train with augmentation.

Public names are re-exported lazily, so importing the package (or its CLI command) costs no
TensorFlow start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FinetuneConfig": "classifiers.finetune.config",
    "FinetuneReport": "classifiers.finetune.report",
    "run_finetune": "classifiers.finetune.job",
    "FinetuneCVConfig": "classifiers.finetune.config",
    "FinetuneCVReport": "classifiers.finetune.cv_report",
    "run_finetune_cv": "classifiers.finetune.cv",
    "FinetuneError": "classifiers.errors",
    "FinetunedClassifier": "classifiers.finetune.saved",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'classifiers.finetune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
