"""The rows `train` fits on and the rows it scores, drawn from a store's splits.

- ``--fit-on train`` (the default): fit on the train split; validation drives a Keras head's
  early stopping and is scored with test.
- ``--fit-on train+validation``: once the settings are chosen by cross-validation, the final
  model fits on every labelled row outside test. A Keras head still needs rows to stop on: an
  inner validation set of `INNER_VALIDATION` of those images, drawn from each image's id (so the
  same images every run, and an image and its flipped view always on the same side). Only
  test is scored: validation is no longer held out.

With flipped views (a store extracted with ``--flip-views``) the mirrored maps of the fitted
images join the fit rows; with test-time flips (`classifiers.tta`) every scored split carries
its flipped maps too. With augmented views (``extract --views K``) the K views' maps of each
fitted image join the fit rows (K + 1 rows per image); a view goes wherever its image goes, so
no view of a scored or early-stopping image is ever fitted on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifiers.errors import TrainError

#: What `train --fit-on` accepts.
FIT_ON = ("train", "train+validation")
#: Share of train+validation images held out for a Keras head's early stopping.
INNER_VALIDATION = 0.15


@dataclass(frozen=True)
class Split:
    """Labelled rows of one split: maps, labels, ids, and the flipped maps and augmented views'
    maps ((rows, K, ...)) when loaded."""

    X: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    flipped: np.ndarray | None = None
    views: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, keep: np.ndarray) -> Split:
        flipped = None if self.flipped is None else self.flipped[keep]
        views = None if self.views is None else self.views[keep]
        return Split(self.X[keep], self.y[keep], self.ids[keep], flipped, views)


@dataclass(frozen=True)
class FitData:
    """What to fit on, what stops a Keras head, what to score, and how it was drawn."""

    X: np.ndarray
    y: np.ndarray
    validation: tuple[np.ndarray, np.ndarray] | None  # rows a Keras head stops on (maps, labels)
    scored: dict[str, Split]  # split name -> rows to score
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the model's metadata


def load_split(store: Any, split: str, *, flipped: bool, views: bool = False) -> Split:
    """The labelled rows of `split` (whole-split reads), with their flipped maps and augmented
    views' maps if asked."""
    rows = store.load(split)
    keep = rows.labels >= 0
    flipped_maps = store.load(split, flipped=True).features if flipped else None
    view_maps = None
    if views and store.fingerprint.views:
        per_view = [store.load(split, view=k).features for k in range(1, store.fingerprint.views + 1)]
        view_maps = np.stack(per_view, axis=1)
    loaded = Split(rows.features, rows.labels, np.asarray(rows.ids).astype(str), flipped_maps, view_maps)
    return loaded if keep.all() else loaded.subset(keep)  # the usual case: no copy of the features


def inner_validation(ids: np.ndarray, fraction: float = INNER_VALIDATION) -> np.ndarray:
    """Mask of the ids held out for early stopping: a pure function of each id, salted so that it
    is independent of the store's own train/validation/test split."""
    cut = fraction * 2**64
    return np.array(
        [int(hashlib.sha256(f"inner-validation:{i}".encode()).hexdigest()[:16], 16) < cut for i in ids]
    )


def fit_data(
    store: Any,
    fit_on: str,
    *,
    flips: bool,
    tta: bool | str,
    early_stopping: bool,
    views: bool = False,
) -> FitData:
    """The rows of `store` to fit on and to score.

    `flips` adds the flipped maps of the fitted images, `views` their augmented views' maps;
    `tta` (True or "flip": the flipped maps, "views": the augmented views' maps) loads those of
    the scored splits; `early_stopping` (a Keras head) asks for validation rows. Raises
    `TrainError` for an unknown `fit_on` or a split without rows to fit on.
    """
    if fit_on not in FIT_ON:
        raise TrainError(f"--fit-on must be one of {', '.join(FIT_ON)}, not {fit_on!r}")
    tta_flip, tta_views = tta in (True, "flip"), tta == "views"
    pooled = fit_on != "train"  # validation rows are fitted on too
    train = load_split(store, "train", flipped=flips, views=views)
    validation = load_split(
        store, "validation", flipped=flips or tta_flip, views=(views and pooled) or tta_views
    )
    test = load_split(store, "test", flipped=tta_flip, views=tta_views)
    info: dict[str, Any] = {"fit_on": fit_on}
    if fit_on == "train":
        fitted, stop = train, validation
        scored = {"validation": validation, "test": test}
    else:
        pool = _concat(train, validation)
        inner = inner_validation(pool.ids) if early_stopping else np.zeros(len(pool), dtype=bool)
        if early_stopping and (inner.all() or not inner.any()):
            inner = np.zeros(len(pool), dtype=bool)  # too few images to hold any out: fit on all
        fitted, stop = pool.subset(~inner), pool.subset(inner)
        scored = {"test": test}
        if early_stopping:
            info["inner_validation"] = len(stop)
    X, y = fitted.X, fitted.y
    if flips and fitted.flipped is not None:
        X, y = np.concatenate([X, fitted.flipped]), np.concatenate([y, fitted.y])
    if views and fitted.views is not None:
        k = fitted.views.shape[1]
        X = np.concatenate([X, fitted.views.reshape(-1, *fitted.views.shape[2:])])
        y = np.concatenate([y, np.repeat(fitted.y, k)])
        info["augmented_views"] = k
    info["fit_images"] = len(fitted)
    info["fit_rows"] = len(y)
    return FitData(
        X=X,
        y=y,
        validation=(stop.X, stop.y) if len(stop) else None,
        scored={name: split for name, split in scored.items() if len(split)},
        info=info,
    )


def _concat(a: Split, b: Split) -> Split:
    flipped = None if a.flipped is None or b.flipped is None else np.concatenate([a.flipped, b.flipped])
    views = None if a.views is None or b.views is None else np.concatenate([a.views, b.views])
    return Split(
        np.concatenate([a.X, b.X]),
        np.concatenate([a.y, b.y]),
        np.concatenate([a.ids, b.ids]),
        flipped,
        views,
    )
