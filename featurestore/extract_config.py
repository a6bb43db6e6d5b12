"""What `featurestore extract` is asked to do: `ExtractConfig`.

A module of its own that imports nothing heavy, so the CLI can take its defaults and choices
without importing numpy, h5py or Keras.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from featurestore.fingerprint import DEFAULT_DECODER, PRECISIONS
from featurestore.hardware import default_workers
from featurestore.splits import SplitFractions

#: `--precision` choices: auto picks mixed_bfloat16 where it runs natively (a GPU, a CPU with
#: avx512_bf16 or amx_bf16), float32 elsewhere, when a store is created; later runs keep it.
EXTRACT_PRECISIONS = ("auto", *PRECISIONS)
#: `--decode-in` choices: auto is processes on a GPU machine (decoding is the wall there),
#: threads on a CPU (the model is; Pillow and hashlib release the GIL).
DECODE_MODES = ("auto", "threads", "processes")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    source: Path
    store: Path
    weights: str = "imagenet"
    input_size: int = 150
    batch_size: int = 32
    workers: int = dataclasses.field(default_factory=default_workers)
    decode_in: str = "auto"
    dtype: str = "float32"
    precision: str = "auto"
    decoder: str = DEFAULT_DECODER
    extra_layers: tuple[str, ...] = ()
    flip_views: bool = False
    split_fractions: SplitFractions = dataclasses.field(default_factory=SplitFractions)
    labels: str | None = "inferred"
    rebuild: bool = False
    rehash: bool = False
    repair: bool = False  # drop damaged pieces first (sha256 check); their rows are recomputed
    commit_every: int = 512
    commit_seconds: float = 60.0
    progress: bool = True
    progress_interval: float = 30.0  # seconds between progress lines when stderr is not a terminal
