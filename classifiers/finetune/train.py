"""The epoch loop: one `fit` call per epoch, early stopping on validation loss, restore of the
best epoch, and an atomic checkpoint after every epoch that a re-run resumes from.

One `fit` per epoch (the compiled step is reused between calls) keeps the loop's state ours:
the epoch's shuffle and cached views come from (seed, epoch), and the early-stopping counters live in
the checkpoint, so a resumed run continues where the killed one stopped instead of restarting
Keras' callbacks from scratch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from classifiers.errors import FinetuneError
from classifiers.finetune.checkpoint import Checkpoint, TrainState
from classifiers.finetune.data import Rows


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schedule:
    epochs: int
    batch_size: int
    patience: int
    seed: int
    augment: bool = False  # cached path: draw each row's stored views (flipped, augmented)
    workers: int = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class FitResult:
    history: dict[str, list[float]]
    best_epoch: int | None  # 1-based; None without validation
    resumed_from: int  # epochs already finished when this process started
    epoch_seconds: list[float]
    stopped_early: bool


def _seed_states(model: keras.Model) -> list[keras.Variable]:
    # Augmentation and dropout draw from these; by position, since their names depend on how
    # many generators the process created before.
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def snapshot(model: keras.Model, owner: keras.Model, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Trainable layers' weights (from `owner`, which holds them by name), optimizer and seeds."""
    arrays = {
        f"w/{name}/{i}": np.asarray(w)
        for name in layers
        for i, w in enumerate(owner.get_layer(name).get_weights())
    }
    arrays |= {f"opt/{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)}
    arrays |= {f"seed/{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(_seed_states(model))}
    return arrays


def restore(
    model: keras.Model,
    owner: keras.Model,
    layers: Sequence[str],
    arrays: dict[str, np.ndarray],
    weights_only: bool = False,
) -> None:
    """Put a snapshot back; `weights_only` for the best epoch's weights."""
    try:
        for name in layers:
            layer = owner.get_layer(name)
            layer.set_weights([arrays[f"w/{name}/{i}"] for i in range(len(layer.weights))])
        if weights_only:
            return
        variables = [*model.optimizer.variables, *_seed_states(model)]
        keys = [f"opt/{i}" for i in range(len(model.optimizer.variables))]
        keys += [f"seed/{i}" for i in range(len(_seed_states(model)))]
        if len(keys) != sum(1 for key in arrays if not key.startswith("w/")):
            raise KeyError("optimizer or generator state count")
        for variable, key in zip(variables, keys, strict=True):
            variable.assign(arrays[key])
    except (KeyError, ValueError) as exc:
        raise FinetuneError(f"the checkpoint does not fit this model ({exc}); use --overwrite") from None


def fit(
    model: keras.Model,
    owner: keras.Model,
    layers: Sequence[str],
    train: Rows,
    validation: Rows | None,
    schedule: Schedule,
    checkpoint: Checkpoint,
    log: Callable[[str], None] = lambda line: None,
) -> FitResult:
    """Train compiled `model` epoch by epoch from the checkpoint (if any) to the end.

    `owner` holds the trainable `layers` by name (the full model; `model` may wrap it). With a
    validation split, stops after `patience` epochs without a lower validation loss and ends
    with the best epoch's weights.
    """
    state = checkpoint.load() or TrainState(run=checkpoint.run)
    model.optimizer.build(model.trainable_variables)  # its variables must exist to be restored
    resumed_from = state.epoch
    if state.weights is not None:
        restore(model, owner, layers, checkpoint.arrays(state.weights))
        log(f"resuming after epoch {state.epoch} from {checkpoint.folder}")
    val_batches = (
        validation.in_order(schedule.batch_size) if validation is not None and len(validation) else None
    )
    best = checkpoint.arrays(state.best) if state.best is not None else None
    while not state.finished and state.epoch < schedule.epochs:
        started = time.perf_counter()
        batches = train.for_epoch(
            state.epoch, schedule.seed, schedule.batch_size, schedule.augment, schedule.workers
        )
        result = model.fit(batches, validation_data=val_batches, epochs=1, verbose=0, shuffle=False)
        seconds = time.perf_counter() - started
        for key, values in result.history.items():
            state.history.setdefault(key, []).append(float(values[-1]))
        state.epoch_seconds.append(seconds)
        state.epoch += 1
        improved = False
        if val_batches is not None:
            val_loss = state.history["val_loss"][-1]
            if not math.isfinite(val_loss):
                raise FinetuneError(f"validation loss is {val_loss} at epoch {state.epoch}; lower --lr")
            improved = state.best_val_loss is None or val_loss < state.best_val_loss
            if improved:
                state.best_val_loss, state.best_epoch, state.wait = val_loss, state.epoch, 0
            else:
                state.wait += 1
        state.finished = state.epoch >= schedule.epochs or state.wait >= schedule.patience
        arrays = snapshot(model, owner, layers)
        checkpoint.save(state, arrays, improved)
        if improved:
            best = arrays
        log(_epoch_line(state, schedule.epochs, seconds, improved))
    if best is not None:
        restore(model, owner, layers, best, weights_only=True)
    return FitResult(
        history=state.history,
        best_epoch=state.best_epoch,
        resumed_from=resumed_from,
        epoch_seconds=state.epoch_seconds,
        stopped_early=state.epoch < schedule.epochs,
    )


def _epoch_line(state: TrainState, epochs: int, seconds: float, improved: bool) -> str:
    values = "  ".join(f"{key} {values[-1]:.4f}" for key, values in state.history.items())
    mark = "  (best)" if improved else ""
    return f"epoch {state.epoch}/{epochs}: {values}  {seconds:.1f} s{mark}"
