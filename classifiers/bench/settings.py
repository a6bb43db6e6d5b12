"""Feature settings a benchmark compares: several stores of the same images, with or without
flipped or augmented training views and test-time flips or views, each with what it costs
to extract and keep.

A setting is (store, flips, tta, views, tta_views). ``flips`` adds the maps of the mirrored
training-fold images to the rows a classifier fits on; ``tta`` averages each scored image's
probabilities with its mirror image's. Both need a store extracted with ``--flip-views``; a store
without them gets only the plain setting. ``views`` adds the maps of the training-fold images'
cached augmented views (a store extracted with ``--views K``): K more rows per training image,
never of a scored image; ``tta_views`` averages each scored image's probabilities over it and its
K views (as ``train --tta views`` and ``predict`` do). Every setting is scored on the same
folds: the images all the stores share, sorted by id (`classifiers.bench.folds.common_images`),
so that the leaderboard compares feature sets image for image.

Cost per image: the seconds its extractions took per computed image (from the store's run
history, ``STORE/runs/``; n/a when it has none) and the bytes of the maps it keeps per image
(every layer and view, at the storage dtype).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.bench.config import FLIP_CHOICES, VIEW_CHOICES, tta_modes
from classifiers.errors import BenchError

#: How a setting's label names its test-time averaging.
TTA_SUFFIX = {"none": "", "flip": "+tta", "views": "+tta-views"}


@dataclass(frozen=True)
class Setting:
    """One feature set to score every classifier on."""

    label: str  # "" for the one plain setting of a single-store benchmark (names unchanged)
    store: Path
    flips: bool
    tta: bool
    views: bool = False  # also fit on the augmented views of the training images
    tta_views: bool = False  # average each scored image's probabilities over it and its views

    def prefix(self, name: str) -> str:
        return f"{self.label}/{name}" if self.label else name


def _store_label(path: Path, taken: set[str]) -> str:
    label = path.name or str(path)
    n = 2
    while label in taken:
        label, n = f"{path.name}-{n}", n + 1
    taken.add(label)
    return label


def plan_settings(
    stores: list[Path],
    flips: str,
    tta: str,
    has_flips: dict[Path, bool],
    views: str = "no",
    has_views: dict[Path, bool] | None = None,
) -> tuple[list[Setting], list[str]]:
    """The settings to run, in order, and notes on those a store without flipped (or augmented)
    views skips."""
    if flips not in FLIP_CHOICES:
        raise BenchError(f"--flips must be one of {', '.join(FLIP_CHOICES)}, not {flips!r}")
    modes = tta_modes(tta)
    if views not in VIEW_CHOICES:
        raise BenchError(f"--views must be one of {', '.join(VIEW_CHOICES)}, not {views!r}")
    has_views = has_views or {}
    flip_values = {"no": [False], "yes": [True], "both": [False, True]}[flips]
    view_values = {"no": [False], "yes": [True], "both": [False, True]}[views]
    plain = len(stores) == 1 and flip_values == [False] and modes == ("none",) and view_values == [False]
    settings, notes, taken = [], [], set()
    for store in stores:
        name = _store_label(store, taken)
        for use_views in view_values:
            if use_views and not has_views.get(store, False):
                notes.append(
                    f"{name}: no augmented views (extract with --views K); settings without them only"
                )
                continue
            for use_flips in flip_values:
                for mode in modes:
                    if (use_flips or mode == "flip") and not has_flips[store]:
                        notes.append(
                            f"{name}: no flipped views (extract with --flip-views); plain setting only"
                        )
                        continue
                    if mode == "views" and not has_views.get(store, False):
                        notes.append(
                            f"{name}: no augmented views (extract with --views K); no test-time views"
                        )
                        continue
                    suffix = "+views" * use_views + "+flips" * use_flips + TTA_SUFFIX[mode]
                    label = "" if plain else name + suffix
                    settings.append(
                        Setting(label, store, use_flips, mode == "flip", use_views, mode == "views")
                    )
        if not any(s.store == store for s in settings):
            settings.append(Setting(name, store, False, False))
    return settings, sorted(set(notes))


def store_cost(store: Any, store_dir: Path) -> dict[str, Any]:
    """Extraction seconds and stored bytes per image, with the settings that explain them."""
    from featurestore.run_fields import store_bytes
    from featurestore.runs import list_runs

    images = sum(sum(per_class.values()) for per_class in store.counts().values())
    seconds = computed = 0.0
    for record in list_runs(store_dir):
        counts = record.get("counts") or {}
        if record.get("kind") == "extract" and record.get("seconds") and counts.get("computed"):
            seconds += float(record["seconds"])
            computed += int(counts["computed"])
    fp = store.fingerprint
    itemsize = 2 if fp.dtype == "float16" else 4
    copies = (1 + fp.flip_views + fp.views) * sum(int(np.prod(store.map_shape(layer))) for layer in fp.layers)
    return {
        "input_size": fp.input_size,
        "dtype": fp.dtype,
        "flip_views": fp.flip_views,
        "views": fp.views,
        "images": images,
        "extract_seconds_per_image": seconds / computed if computed else None,
        # The maps each image keeps (all layers and views): what the store grows by per image,
        # whatever rows of replaced or deleted images its pieces still hold.
        "bytes_per_image": copies * itemsize,
        "store_bytes": store_bytes(store_dir),
    }
