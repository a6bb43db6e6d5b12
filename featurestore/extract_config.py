"""What `featurestore extract` is asked to do: `ExtractConfig`.

A module of its own that imports nothing heavy, so the CLI can take its defaults and choices
without importing numpy, h5py or Keras.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from featurestore.checks import check_choice, check_int, check_number
from featurestore.errors import ConfigError
from featurestore.fingerprint import DECODERS, DEFAULT_DECODER, DTYPES, MAX_VIEWS, PRECISIONS
from featurestore.hardware import default_workers
from featurestore.splits import SplitFractions
from featurestore.vgg16 import MAX_INPUT_SIZE, MIN_INPUT_SIZE

# Upper bounds that keep a typo from exhausting memory: a batch of 4096 images at 1024 px is
# 51 GiB of input already; threads beyond a few hundred only contend; 65536 pending rows of
# block5_pool maps at 1024 px are 66 GiB. The CLI's click ranges use the same numbers.
MAX_BATCH_SIZE = 4096
MAX_WORKERS = 256
MAX_COMMIT_EVERY = 65536

#: `--precision` choices: auto picks mixed_bfloat16 where it runs natively (a GPU, a CPU with
#: avx512_bf16 or amx_bf16), float32 elsewhere, when a store is created; later runs keep it.
EXTRACT_PRECISIONS = ("auto", *PRECISIONS)
#: `--decode-in` choices: auto is processes on a GPU machine (decoding is the wall there),
#: threads on a CPU (the model is; Pillow and hashlib release the GIL).
DECODE_MODES = ("auto", "threads", "processes")
#: `--engine` choices: this machine's pipeline, or a Ray cluster (`featurestore.ray_engine`).
ENGINES = ("local", "ray")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    source: Path
    store: Path
    weights: str = "imagenet"
    input_size: int = 150
    batch_size: int = 32
    workers: int = dataclasses.field(default_factory=lambda: min(default_workers(), MAX_WORKERS))
    decode_in: str = "auto"
    dtype: str = "float32"
    precision: str = "auto"
    decoder: str = DEFAULT_DECODER
    extra_layers: tuple[str, ...] = ()
    flip_views: bool = False
    views: int = 0  # cached augmented views per image (featurestore.views)
    split_fractions: SplitFractions = dataclasses.field(default_factory=SplitFractions)
    labels: str | None = "inferred"
    rebuild: bool = False
    rehash: bool = False
    repair: bool = False  # drop damaged pieces first (sha256 check); their rows are recomputed
    commit_every: int = 512
    commit_seconds: float = 60.0
    progress: bool = True
    progress_interval: float = 30.0  # seconds between progress lines when stderr is not a terminal
    engine: str = "local"
    ray_address: str | None = None  # None: RAY_ADDRESS, or a local cluster started for the run

    def __post_init__(self) -> None:
        """Refuse what cannot work before any work, naming the option (issue 14, item 8)."""
        check_int("input-size", self.input_size, MIN_INPUT_SIZE, MAX_INPUT_SIZE)
        check_int("batch-size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_int("workers", self.workers, 1, MAX_WORKERS)
        check_int("views", self.views, 0, MAX_VIEWS)
        check_int("commit-every", self.commit_every, 1, MAX_COMMIT_EVERY)
        check_number("commit-seconds", self.commit_seconds, positive=True)
        check_number("progress-interval", self.progress_interval, positive=True)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("precision", self.precision, EXTRACT_PRECISIONS)
        check_choice("decoder", self.decoder, DECODERS)
        check_choice("decode-in", self.decode_in, DECODE_MODES)
        check_choice("engine", self.engine, ENGINES)
        if self.ray_address is not None and self.engine != "ray":
            raise ConfigError("--ray-address needs --engine ray")
        if not isinstance(self.split_fractions, SplitFractions):
            raise TypeError(f"split_fractions must be a SplitFractions, not {self.split_fractions!r}")
