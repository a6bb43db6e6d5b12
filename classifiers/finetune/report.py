"""What a fine-tuning run did: the model folder, metrics next to the head's, the training record."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from classifiers.metrics import format_metrics
from classifiers.model_file import jsonable


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneReport:
    """What a run did: the model folder, metrics next to the head's, the training record."""

    model_path: Path
    metrics: dict[str, dict[str, Any]]  # the fine-tuned model per split
    head_metrics: dict[str, dict[str, Any]]  # the warm-start head on the same splits
    training: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return jsonable({**dataclasses.asdict(self), "model_path": str(self.model_path)})

    def summary(self) -> str:
        t = self.training
        resumed = f", resumed after epoch {t['resumed_from']}" if t["resumed_from"] else ""
        lines = [
            f"fine-tuned {t['unfreeze']}+head from {t['inputs']}{_drawn_from(t)} in {self.seconds:.1f} s: "
            f"{t['epochs_run']} epochs ({t['mean_epoch_seconds']:.1f} s each), "
            f"best epoch {t['best_epoch']}{resumed}; model: {self.model_path}"
        ]
        for split, metrics in self.metrics.items():
            head = self.head_metrics.get(split, {}).get("accuracy")
            versus = f" (head alone: {head:.4f})" if head is not None else ""
            lines += [f"[{split}] accuracy {metrics['accuracy']:.4f}{versus}", format_metrics(metrics)]
        return "\n".join(lines)


def _drawn_from(training: dict[str, Any]) -> str:
    """' and their stored views (...)' when the cached path drew from them."""
    views = training.get("cached_views")
    if not views:
        return ""
    kinds = ["flipped"] if views["flipped_views"] else []
    kinds += [f"{views['augmented_views']} augmented"] if views["augmented_views"] else []
    return f" and their stored views ({' + '.join(kinds)})"
