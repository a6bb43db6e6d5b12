"""Epoch checkpoints that a kill at any instant leaves usable.

``OUT/checkpoint/`` holds ``epoch-NNNN.npz`` files (trainable weights, optimizer variables,
random-generator states) and ``state.json``, which names the last finished epoch's file and the
best epoch's file. Each npz is written under a temporary name, fsynced and renamed; only then is
``state.json`` replaced atomically, and only then are files it no longer names deleted. So the
folder always holds one complete checkpoint: the old one or the new one. Arrays load with
``allow_pickle=False``: a checkpoint cannot run code either.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.errors import FinetuneError
from featurestore.fsutil import atomic_file, atomic_write_text

STATE = "state.json"


@dataclasses.dataclass(kw_only=True)
class TrainState:
    """Where training stands after `epoch` finished epochs."""

    run: str  # digest of the arguments: a checkpoint only resumes the run that wrote it
    epoch: int = 0
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None  # 1-based
    best_val_loss: float | None = None
    wait: int = 0  # epochs since the best one
    finished: bool = False
    weights: str | None = None  # file names inside the checkpoint folder
    best: str | None = None


class Checkpoint:
    """The checkpoint folder of one run (identified by `run`)."""

    def __init__(self, folder: Path, run: str) -> None:
        self.folder = Path(folder)
        self.run = run

    def exists(self) -> bool:
        return (self.folder / STATE).is_file()

    def load(self) -> TrainState | None:
        """The saved state, None without one; refuses a checkpoint of other arguments."""
        try:
            data = json.loads((self.folder / STATE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FinetuneError(f"{self.folder / STATE} is unreadable ({exc}); use --overwrite") from None
        if not isinstance(data, dict) or data.get("run") != self.run:
            raise FinetuneError(
                f"{self.folder} holds a checkpoint of a run with other arguments; rerun with the "
                "same arguments to resume it, or add --overwrite to start over"
            )
        known = {field.name for field in dataclasses.fields(TrainState)}
        return TrainState(**{key: value for key, value in data.items() if key in known})

    def claim(self, overwrite: bool) -> None:
        """Refuse a checkpoint of other arguments (`load`'s error), or discard it when `overwrite`."""
        try:
            self.load()
        except FinetuneError:
            if not overwrite:
                raise
            self.discard()

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """The arrays of one checkpoint file (weights, optimizer, generator states)."""
        with np.load(self.folder / name, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    def save(self, state: TrainState, arrays: dict[str, np.ndarray] | None, improved: bool) -> None:
        """Write the epoch's arrays (when given), then point `state` at them atomically.

        `improved`: this epoch is the new best, so its file is also the best file.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if arrays is not None:
            name = f"epoch-{state.epoch:04d}.npz"
            with atomic_file(self.folder / name) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **arrays)  # a file object: savez would add ".npz" to a name
            state.weights = name
            if improved:
                state.best = name
        state.run = self.run
        # Python's JSON (NaN allowed): a diverged loss is recorded as it was, not refused.
        atomic_write_text(self.folder / STATE, json.dumps(dataclasses.asdict(state), indent=1))
        self._prune(keep={STATE, state.weights, state.best})

    def _prune(self, keep: set[Any]) -> None:
        # Older epochs and temporaries of a killed write; only after state.json stopped naming them.
        for path in self.folder.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
