"""Fixtures for the classifiers tests: small labelled feature maps and a tiny store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: A Keras head small and quick enough for unit tests (a fit takes ~0.3 s).
FAST_HEAD = {"hidden": 8, "epochs": 3, "batch_size": 16, "learning_rate": 0.01}

#: Registry parameters that keep each scikit-learn classifier's fit well under a second on
#: tiny data; the contract does not depend on them.
FAST_SKLEARN = {"random-forest": {"n_estimators": 10}, "hist-gb": {"max_iter": 10}}

CLASS_NAMES = ("cats", "dogs")


def make_maps(
    n: int, n_classes: int = 2, shape: tuple[int, int, int] = (2, 2, 8), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like float32 maps whose first channels carry the class, and balanced labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    X = np.maximum(rng.normal(size=(n, *shape)), 0).astype(np.float32)
    for k in range(n_classes):
        X[y == k, :, :, k] += 2.0
    return X, y.astype(np.int64)


def fast_params(name: str) -> dict:
    """Registry parameters for a quick fit of classifier `name`."""
    if name in ("dense", "gap"):
        return dict(FAST_HEAD)
    return dict(FAST_SKLEARN.get(name, {}))


def view_maps(maps: np.ndarray, view: int) -> np.ndarray:
    """A stand-in for augmented view `view` of an image's maps: close to them, unique to the
    image and the view (so a test can tell which rows a model was fitted on)."""
    return (maps * (1.0 + 0.01 * view) + 0.001 * view).astype(np.float32)


def make_flip_store(path: Path, views: int = 0) -> Path:
    """A store as if extracted with --flip-views: 40 rows (24/8/8), each with its mirrored maps
    (and with `views`, as if extracted with --views K: K augmented views' maps each).

    Its fingerprint differs from `tiny_store`'s only in flip_views (and views).
    """
    import hashlib

    from featurestore.fingerprint import Fingerprint
    from featurestore.splits import SplitFractions
    from featurestore.writer import Row, StoreWriter

    X, y = make_maps(40, seed=5)
    splits = ["train"] * 24 + ["validation"] * 8 + ["test"] * 8
    rows = [
        Row(
            relpath=f"{CLASS_NAMES[label]}/{i:03d}.jpg",
            image_id=hashlib.sha256(f"flip-{i}".encode()).hexdigest(),
            label=CLASS_NAMES[label],
            split=splits[i],
            size=0,
            mtime_ns=0,
            maps={
                "features": maps,
                "flipped/features": maps[:, ::-1].copy(),
                **{f"views/{k}/features": view_maps(maps, k) for k in range(1, views + 1)},
            },
        )
        for i, (maps, label) in enumerate(zip(X, y, strict=True))
    ]
    fingerprint = Fingerprint(weights_sha256="0" * 64, input_size=64, flip_views=True, views=views)
    with StoreWriter(
        path,
        fingerprint=fingerprint,
        split_fractions=SplitFractions(),
        source_root="",
        class_names=CLASS_NAMES,
    ) as writer:
        writer.commit_rows(rows)
    return path


@pytest.fixture
def maps() -> tuple[np.ndarray, np.ndarray]:
    """60 binary-labelled (2, 2, 8) maps."""
    return make_maps(60)


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    """A committed store of 60 labelled (2, 2, 8) maps: 36 train, 12 validation, 12 test."""
    from featurestore.testing import make_store

    X, y = make_maps(60, seed=1)
    splits = ["train"] * 36 + ["validation"] * 12 + ["test"] * 12
    path = tmp_path / "tiny.store"
    make_store(path, X, y, CLASS_NAMES, splits=splits)
    return path
