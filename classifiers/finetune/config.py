"""What `featurestore finetune` is asked to do: the config, validated on creation.

Imports nothing heavy: the CLI reads its defaults and choices to build the command.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from classifiers.errors import FinetuneError
from featurestore.checks import check_choice, check_int, check_number

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
#: Blocks `--unfreeze` accepts: that block and everything above it train.
UNFREEZE_CHOICES = ("block5", "block4")


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
    precision: str = "auto"  # auto: mixed_bfloat16 where native (GPU, bf16 CPU), else float32
    seed: int = 0
    workers: int = min(8, os.cpu_count() or 1)
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_choice("unfreeze", self.unfreeze, UNFREEZE_CHOICES)
        if self.from_cache and self.unfreeze != "block5":
            raise FinetuneError(
                "--from-cache trains block5 on cached block4 maps; --unfreeze block4 needs images"
            )
        check_int("epochs", self.epochs, 1)
        check_int("batch-size", self.batch_size, 1)
        check_int("patience", self.patience, 1)
        check_int("workers", self.workers, 1)
        check_int("seed", self.seed, 0)
        check_number("lr", self.learning_rate, positive=True)
        check_choice("precision", self.precision, PRECISIONS)

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


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for `--precision`: auto is mixed bfloat16 where the hardware runs
    it natively (a GPU, a CPU with avx512_bf16 or amx_bf16: the same detection as `extract`),
    else float32."""
    if precision != "auto":
        return precision
    from featurestore.hardware import auto_precision

    return auto_precision()
