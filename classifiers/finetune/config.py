"""What `featurestore finetune` and `finetune-cv` are asked to do: the configs, validated on creation.

Imports nothing heavy: the CLI reads its defaults and choices to build the command.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from classifiers.errors import FinetuneError
from featurestore.checks import check_choice, check_int, check_number

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
#: Blocks `--unfreeze` accepts: that block and everything above it train.
UNFREEZE_CHOICES = ("block5", "block4")
#: The heads `finetune-cv` trains in each fold to warm-start from: Keras networks on the maps,
#: or logreg, whose pipeline is one exactly (`linear_head`).
CV_HEADS = ("dense", "gap", "logreg")


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
        check_inputs(self.from_cache, self.unfreeze, self.workers)
        check_schedule(self.epochs, self.batch_size, self.patience, self.learning_rate, self.precision)
        check_int("seed", self.seed, 0)

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
class FinetuneCVConfig:
    """What `featurestore finetune-cv` was asked to do; see the command's help."""

    store: Path
    out: Path
    folds: int = 5
    head: str = "dense"
    head_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 10
    learning_rate: float = 1e-5
    batch_size: int = 20
    patience: int = 3
    augment: bool = True
    from_cache: bool = True
    unfreeze: str = "block5"
    weights: str = "imagenet"
    precision: str = "auto"
    seed: int = 0  # draws the folds (as bench --seed) and seeds every fold's training
    workers: int = min(8, os.cpu_count() or 1)
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_int("folds", self.folds, 2)
        check_choice("head", self.head, CV_HEADS)
        check_inputs(self.from_cache, self.unfreeze, self.workers)
        check_schedule(self.epochs, self.batch_size, self.patience, self.learning_rate, self.precision)
        check_int("seed", self.seed, 0)

    def params(self) -> dict[str, Any]:
        """The settings that shape the folds' results (a finished fold is reused only for these)."""
        keys = ("folds", "head", "epochs", "learning_rate", "batch_size", "patience", "augment", "seed")
        params = {"head_params": dict(self.head_params), **{key: getattr(self, key) for key in keys}}
        if not self.from_cache:  # named only off the default: folds of cached runs keep their keys
            params |= {"from_cache": False, "unfreeze": self.unfreeze}
        return params


def check_inputs(from_cache: bool, unfreeze: str, workers: int) -> None:
    """What `finetune` and `finetune-cv` train on and which blocks train, named as their options are."""
    check_choice("unfreeze", unfreeze, UNFREEZE_CHOICES)
    if from_cache and unfreeze != "block5":
        raise FinetuneError(
            "--from-cache trains block5 on cached block4 maps; --unfreeze block4 needs images (--from-images)"
        )
    check_int("workers", workers, 1)


def check_schedule(epochs: int, batch_size: int, patience: int, learning_rate: float, precision: str) -> None:
    """The training settings `finetune` and `finetune-cv` share, named as their options are."""
    check_int("epochs", epochs, 1)
    check_int("batch-size", batch_size, 1)
    check_int("patience", patience, 1)
    check_number("lr", learning_rate, positive=True)
    check_choice("precision", precision, PRECISIONS)


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy for `--precision`: auto is mixed bfloat16 where the hardware runs
    it natively (a GPU, a CPU with avx512_bf16 or amx_bf16: the same detection as `extract`),
    else float32."""
    if precision != "auto":
        return precision
    from featurestore.hardware import auto_precision

    return auto_precision()
