"""What `featurestore finetune` is asked to do, and what it did: the config and the report."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from classifiers.errors import FinetuneError
from classifiers.metrics import format_metrics
from classifiers.model_file import jsonable

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """What `featurestore finetune` was asked to do; see the command's help."""

    store: Path
    head: Path
    out: Path
    unfreeze: str = "block5"
    epochs: int = 30
    learning_rate: float = 1e-5
    batch_size: int = 20
    patience: int = 5
    augment: bool = True
    from_cache: bool = False
    weights: str = "imagenet"
    precision: str = "auto"  # auto: mixed_bfloat16 on a GPU, float32 on the CPU
    seed: int = 0
    workers: int = min(8, os.cpu_count() or 1)
    overwrite: bool = False

    def validate(self) -> None:
        from classifiers.finetune.model import UNFREEZE_CHOICES

        if self.unfreeze not in UNFREEZE_CHOICES:
            raise FinetuneError(
                f"--unfreeze must be one of {', '.join(UNFREEZE_CHOICES)}, not {self.unfreeze!r}"
            )
        if self.from_cache and self.unfreeze != "block5":
            raise FinetuneError(
                "--from-cache trains block5 on cached block4 maps; --unfreeze block4 needs images"
            )
        for name, value, low in (
            ("epochs", self.epochs, 1),
            ("batch-size", self.batch_size, 1),
            ("patience", self.patience, 1),
            ("workers", self.workers, 1),
        ):
            if value < low:
                raise FinetuneError(f"--{name} must be at least {low}, not {value}")
        if not self.learning_rate > 0:
            raise FinetuneError(f"--lr must be positive, not {self.learning_rate}")
        if self.precision not in PRECISIONS:
            raise FinetuneError(f"--precision must be one of {', '.join(PRECISIONS)}")

    def params(self) -> dict[str, Any]:
        """The settings that shape training (a checkpoint resumes only the same ones)."""
        keys = (
            "unfreeze",
            "epochs",
            "learning_rate",
            "batch_size",
            "patience",
            "augment",
            "from_cache",
            "seed",
        )
        return {key: getattr(self, key) for key in keys}


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
            f"fine-tuned {t['unfreeze']}+head from {t['inputs']} in {self.seconds:.1f} s: {t['epochs_run']} "
            f"epochs ({t['mean_epoch_seconds']:.1f} s each), best epoch {t['best_epoch']}{resumed}; "
            f"model: {self.model_path}"
        ]
        for split, metrics in self.metrics.items():
            head = self.head_metrics.get(split, {}).get("accuracy")
            versus = f" (head alone: {head:.4f})" if head is not None else ""
            lines += [f"[{split}] accuracy {metrics['accuracy']:.4f}{versus}", format_metrics(metrics)]
        return "\n".join(lines)


def gpu_available() -> bool:
    """Whether the Keras backend sees a GPU (each backend answers in its own API)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    if backend == "tensorflow":
        import tensorflow as tf  # the one backend probe; model code stays backend-neutral

        return bool(tf.config.list_physical_devices("GPU"))
    return False


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for `--precision`: auto is mixed bfloat16 on a GPU, else float32."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if gpu_available() else "float32"
