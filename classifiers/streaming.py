"""Training on stores larger than memory: when to stream, and how each kind of classifier reads.

`train` reads whole splits into memory when they fit and streams the store otherwise
(`decide`). Streamed, the classifiers read the store in batches of `READ_ROWS` rows and never
hold a split's maps:

- scikit-learn pipelines (`FeatureTransform` first) apply that transform to each batch as it
  is read and keep only its output: max- or average-pooled maps are 512 values a row, so 1M
  rows take 2 GB. The rows are the same, in the same order, as the in-memory path's, so the
  fitted model is the same. Flattened maps (8,192 values a row) are as large as the maps
  themselves: none of the registry's scikit-learn models learns incrementally (`partial_fit`),
  and swapping in a different one (SGD) would train another model than the one asked for, so
  they are refused with one line when their rows would not fit (`TransformedTooLarge`).
- Keras heads on the maps train from a `keras.utils.PyDataset` over the store
  (`classifiers.store_dataset.StoreBatches`, shuffled per epoch, seeded).
- Validation and test are scored batch by batch (probabilities are a few values a row).

Nothing here imports Keras; `store_dataset` does, and is imported only when a head streams.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from classifiers.errors import TrainError
from classifiers.keras_heads import KerasHead
from classifiers.metrics import full_proba
from classifiers.transforms import FeatureTransform

__all__ = [
    "MEMORY_ENV",
    "READ_ROWS",
    "STREAM_FRACTION",
    "StreamDecision",
    "available_memory",
    "decide",
    "fit_streamed",
    "format_bytes",
    "iter_labeled",
    "labeled_rows",
    "maps_bytes",
    "parse_bytes",
    "present_classes",
    "split_counts",
    "split_proba",
    "transformed_rows",
]

#: Rows per read when streaming: 32 MB of (4, 4, 512) float32 maps, large enough that HDF5
#: reads whole chunks at disk speed, small against any memory budget.
READ_ROWS = 1024

#: Stream when the in-memory path's maps would take more than this share of the available
#: memory: fitting makes copies (normalised rows, float64 conversions, the pooled output).
STREAM_FRACTION = 0.5

#: Overrides the available memory the automatic choice compares against (bytes, or with a
#: K/M/G/T suffix, powers of 1024): tests and benchmarks force either path with it.
MEMORY_ENV = "FEATURESTORE_MEMORY_AVAILABLE"

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; a plain number is bytes. ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size in bytes: {text!r} (e.g. 4096, 512M, 2G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_bytes(n: float) -> str:
    """Human size, powers of 1024: ``1.4 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_memory() -> tuple[int, str]:
    """(bytes, where the figure comes from): `MEMORY_ENV` when set, else the least of
    /proc/meminfo's MemAvailable (what can be allocated without swapping), the room left under
    this process's address-space limit (RLIMIT_AS) and under its cgroup's memory.max."""
    from classifiers.errors import ParamError

    forced = os.environ.get(MEMORY_ENV)
    if forced:
        try:
            return parse_bytes(forced), MEMORY_ENV
        except ValueError as exc:
            raise ParamError(f"{MEMORY_ENV}: {exc}") from None
    figures = [(_meminfo("/proc/meminfo", "MemAvailable"), "MemAvailable")]
    figures.append((_address_space_left(), "RLIMIT_AS"))
    figures.append((_cgroup_left(), "cgroup memory.max"))
    known = [(value, source) for value, source in figures if value is not None]
    if not known:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"
    return min(known)


def _meminfo(path: str, key: str) -> int | None:
    """A ``key: N kB`` line of a /proc file, in bytes."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _address_space_left() -> int | None:
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    return max(0, limit - (_meminfo("/proc/self/status", "VmSize") or 0))


def _cgroup_left() -> int | None:
    """memory.max minus memory.current of this process's cgroup (v2), if it has a limit."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            relative = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        folder = os.path.join("/sys/fs/cgroup", relative.lstrip("/"))
        with open(os.path.join(folder, "memory.max"), encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(folder, "memory.current"), encoding="ascii") as f:
            return max(0, int(limit) - int(f.read()))
    except (OSError, ValueError, StopIteration):
        return None


#: `store.counts()` walks every live row; a streamed fit asks for it several times.
_COUNTS: weakref.WeakKeyDictionary[Any, dict[str, dict[str, int]]] = weakref.WeakKeyDictionary()


def split_counts(store: Any) -> dict[str, dict[str, int]]:
    """`store.counts()`, computed once per open store (a store is a view of one commit)."""
    if store not in _COUNTS:
        _COUNTS[store] = store.counts()
    return _COUNTS[store]


def labeled_rows(store: Any, split: str) -> int:
    """Live rows of `split` whose label is one of the store's classes (what training reads)."""
    classes = set(store.class_names)
    return sum(n for label, n in split_counts(store)[split].items() if label in classes)


def maps_bytes(store: Any, splits: Sequence[tuple[str, bool]]) -> int:
    """Bytes of the float32 maps `store.load` returns for each (split, flipped), all rows."""
    counts = split_counts(store)
    total = 0
    for split, flipped in splits:
        values = int(np.prod(store.map_shape(flipped=flipped)))
        total += sum(counts[split].values()) * values * 4
    return total


@dataclass(frozen=True)
class StreamDecision:
    """Whether `train` streams the store, and the one line that says so (empty: in memory)."""

    stream: bool
    needed: int  # bytes of the maps the in-memory path would hold
    available: int
    message: str


def decide(needed: int, what: str, forced: bool | None) -> StreamDecision:
    """Stream when `forced`, or (None) when `needed` bytes exceed `STREAM_FRACTION` of the
    available memory. `what` names the data for the message (e.g. "the train, validation and
    test maps")."""
    available, source = available_memory()
    too_large = needed > STREAM_FRACTION * available
    stream = too_large if forced is None else forced
    if not stream:
        return StreamDecision(False, needed, available, "")
    why = (
        "--stream"
        if forced
        else f"more than {STREAM_FRACTION:.0%} of the {format_bytes(available)} available ({source})"
    )
    message = (
        f"streaming the store in batches of {READ_ROWS} rows: {what} take {format_bytes(needed)} "
        f"as float32, {why}"
    )
    return StreamDecision(True, needed, available, message)


def iter_labeled(
    store: Any, split: str, *, flipped: bool = False, batch_size: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(maps, labels) of the labeled rows of `split`, batch by batch (`READ_ROWS` rows by
    default), in store order."""
    size = batch_size or READ_ROWS
    for batch in store.iter_batches(split, batch_size=size, flipped=flipped):
        keep = batch.labels >= 0
        if keep.all():
            yield batch.features, batch.labels
        elif keep.any():
            yield batch.features[keep], batch.labels[keep]


class TransformedTooLarge(TrainError):
    """A scikit-learn pipeline's transformed rows would not fit in memory."""


def transformed_rows(
    store: Any,
    sources: Sequence[tuple[str, bool]],
    transform: Callable[[np.ndarray], np.ndarray],
    width: int,
    *,
    budget: int | None = None,
    what: str = "the rows",
) -> tuple[np.ndarray, np.ndarray]:
    """The labeled rows of each (split, flipped) source, `transform`ed batch by batch into one
    preallocated (N, width) float32 array, with their labels: in-memory `load` order.

    `budget` (bytes) refuses, before reading, an output larger than it (`TransformedTooLarge`).
    """
    n = sum(labeled_rows(store, split) for split, _ in sources)
    size = n * width * 4
    if budget is not None and size > budget:
        raise TransformedTooLarge(
            f"{what}: {n} rows of {width} values take {format_bytes(size)}, more than the "
            f"{format_bytes(budget)} that fit in memory"
        )
    X = np.empty((n, width), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    at = 0
    for split, flipped in sources:
        for maps, labels in iter_labeled(store, split, flipped=flipped):
            rows = transform(maps)
            X[at : at + len(rows)] = rows
            y[at : at + len(rows)] = labels
            at += len(rows)
    if at != n:  # the counts and the rows come from the same commit: a bug if they differ
        raise AssertionError(f"read {at} labeled rows, the store counts {n}")
    return X, y


def pooling_front(estimator: BaseEstimator) -> FeatureTransform | None:
    """The `FeatureTransform` a scikit-learn pipeline starts with, or None (a bare head)."""
    if isinstance(estimator, Pipeline) and isinstance(estimator.steps[0][1], FeatureTransform):
        return estimator.steps[0][1]
    return None


def split_proba(
    estimator: BaseEstimator, store: Any, split: str, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, n_classes), labels) of the labeled rows of `split`, predicted batch
    by batch on the maps (a pipeline transforms each batch itself)."""
    probas, labels = [np.empty((0, n_classes))], [np.empty(0, dtype=np.int64)]
    for maps, y in iter_labeled(store, split):
        probas.append(full_proba(estimator, maps, n_classes))
        labels.append(y)
    return np.concatenate(probas), np.concatenate(labels)


def fit_streamed(
    estimator: BaseEstimator,
    store: Any,
    sources: Sequence[tuple[str, bool]],
    *,
    validate: bool,
    budget: int,
    classifier: str,
) -> BaseEstimator:
    """Fit a registry pipeline on the labeled rows of `sources`, streamed: its first step
    transforms each batch as it is read (`transformed_rows`; refused when its rows would take
    more than `budget` bytes), its other steps fit on the result. `validate` hands the
    validation split to a Keras head at the end (early stopping). Returns `estimator`, fitted.
    (A bare Keras head streams through `classifiers.store_dataset.fit_head`.)
    """
    front = pooling_front(estimator)
    shape = tuple(store.map_shape())
    if front is not None:
        front.fit(np.zeros((1, *shape), dtype=np.float32))  # records the maps' shape only
        width = front.n_features_out_
        what = f"{classifier} reads {front.mode} features"
        hint = "; train on pooled features (--features max or avg) or a Keras head"
        try:
            X, y = transformed_rows(store, sources, front.transform, width, budget=budget, what=what)
            val = None
            if validate and isinstance(estimator.steps[-1][1], KerasHead):
                val = transformed_rows(store, [("validation", False)], front.transform, width, budget=budget)
        except TransformedTooLarge as exc:
            raise TransformedTooLarge(f"{exc}{hint if front.mode == 'flatten' else ''}") from None
        _fit_after_front(estimator, X, y, val)
        return estimator
    raise TrainError(f"{classifier} cannot train from a stream: it is not a pipeline")


def present_classes(store: Any, sources: Sequence[tuple[str, bool]]) -> np.ndarray:
    """Sorted label values (indices of the store's classes) with rows in `sources`."""
    counts = split_counts(store)
    labels = {label for split, _ in sources for label, n in counts[split].items() if n}
    return np.array(sorted(i for i, name in enumerate(store.class_names) if name in labels), dtype=np.int64)


def _fit_transform_in_place(step: BaseEstimator, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`step.fit_transform(X, y)`, in place when the step can (``copy=False``): `X` is the
    streamed rows, nobody else's, and a copy of them is what would not fit. The step keeps
    its own ``copy`` setting for later calls (a saved model transforms callers' arrays)."""
    copies = step.get_params(deep=False).get("copy")
    if copies is not True:
        return step.fit_transform(X, y)
    step.set_params(copy=False)
    try:
        return step.fit_transform(X, y)
    finally:
        step.set_params(copy=True)


def _fit_after_front(
    pipeline: Pipeline,
    X: np.ndarray,
    y: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Fit the steps after the first on its output, as `Pipeline.fit` would have."""
    for _, step in pipeline.steps[1:-1]:
        X = _fit_transform_in_place(step, X, y)
        if validation is not None:
            validation = (step.transform(validation[0]), validation[1])
    final = pipeline.steps[-1][1]
    if validation is not None and isinstance(final, KerasHead):
        final.fit(X, y, validation_data=validation)
    else:
        final.fit(X, y)
