"""What `featurestore extract` is asked to do: `ExtractConfig`.

A module of its own that imports nothing heavy, so the CLI can take its defaults and choices
without importing numpy, h5py or Keras.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from featurestore.splits import SplitFractions


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    source: Path
    store: Path
    weights: str = "imagenet"
    input_size: int = 150
    batch_size: int = 32
    workers: int = 4
    dtype: str = "float32"
    precision: str = "float32"
    extra_layers: tuple[str, ...] = ()
    flip_views: bool = False
    split_fractions: SplitFractions = dataclasses.field(default_factory=SplitFractions)
    labels: str | None = "inferred"
    rebuild: bool = False
    rehash: bool = False
    commit_every: int = 512
    commit_seconds: float = 60.0
    progress: bool = True
    progress_interval: float = 30.0  # seconds between progress lines when stderr is not a terminal
