"""Helpers for tests elsewhere (classifiers, benchmarks): a real store without running a model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featurestore.fingerprint import Fingerprint
from featurestore.splits import SplitFractions, split_of
from featurestore.store import FeatureStore, open_store
from featurestore.writer import Row, StoreWriter


def make_store(
    path: str | Path,
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    splits: Sequence[str] | None = None,
    *,
    fingerprint: Fingerprint | None = None,
) -> FeatureStore:
    """Write given maps as a committed store; splits default to the stable hash split."""
    fingerprint = fingerprint or Fingerprint(
        weights_sha256="0" * 64, input_size=max(32, 32 * features.shape[1])
    )
    fractions = SplitFractions()
    rows = []
    for i, (maps, label) in enumerate(zip(features, labels, strict=True)):
        image_id = hashlib.sha256(f"image-{i}".encode()).hexdigest()
        rows.append(
            Row(
                relpath=f"{class_names[label] if label >= 0 else 'unlabeled'}/{i:06d}.jpg",
                image_id=image_id,
                label=class_names[label] if label >= 0 else None,
                split=splits[i] if splits is not None else split_of(image_id, fractions),
                size=0,
                mtime_ns=0,
                maps={"features": np.asarray(maps, np.float32)},
            )
        )
    with StoreWriter(
        path, fingerprint=fingerprint, split_fractions=fractions, source_root="", class_names=class_names
    ) as writer:
        writer.commit_rows(rows)
    return open_store(path)


def cats_dogs_writer(path: str | Path, fingerprint: Fingerprint, **kwargs: Any) -> StoreWriter:
    """A writer of a cats/dogs store with the default split fractions (rows are given by hand)."""
    return StoreWriter(
        path,
        fingerprint=fingerprint,
        split_fractions=SplitFractions(),
        source_root="/src",
        class_names=("cats", "dogs"),
        **kwargs,
    )
