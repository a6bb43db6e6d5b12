"""Cached augmented views (`extract --views K`): K deterministic variants of each image.

View k (1..K) of an image is drawn from a generator seeded by the image's id (the sha256 of its
bytes) and k alone, so the same image gets the same views in any run, batch or order: a resumed
or repeated extraction stays bit-identical, and a head's augmentation costs nothing per epoch.

Each view is a crop of the decoded (input-size) image, resized back to the input size with
Pillow's bilinear filter: a random scale (the crop is 1/1.0 to 1/1.3 of each side: a small zoom
in) and aspect change (up to +-10%), at a random position, mirrored on odd k (half the views are
flipped). `VIEW_RECIPE` names this recipe; a change of it is a change of the maps
(bump `featurestore.fingerprint.EXTRACTOR_VERSION`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_ZOOM", "VIEW_RECIPE", "augment", "augment_batch", "view_box"]

VIEW_RECIPE = "crop-zoom-aspect-flip/1"
MAX_ZOOM = 1.3  # the crop's sides are at least 1/1.3 of the image's
MAX_ASPECT = 0.1  # the crop's width/height ratio within +-10%


def _generator(image_id: str, view: int) -> np.random.Generator:
    """PCG64 seeded by sha256(image id, view): stable across numpy versions and platforms."""
    digest = hashlib.sha256(f"{image_id}/{view}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def view_box(image_id: str, view: int, size: int) -> tuple[tuple[float, float, float, float], bool]:
    """The crop box (left, top, right, bottom) in pixels of a `size` square, and whether the
    view is mirrored, for view `view` (>= 1) of image `image_id`."""
    if view < 1:
        raise ValueError(f"augmented views are numbered from 1, not {view}")
    rng = _generator(image_id, view)
    zoom = rng.uniform(1.0, MAX_ZOOM)
    aspect = rng.uniform(1.0 - MAX_ASPECT, 1.0 + MAX_ASPECT)
    width = min(size / zoom * np.sqrt(aspect), size)
    height = min(size / zoom / np.sqrt(aspect), size)
    left = rng.uniform(0.0, size - width)
    top = rng.uniform(0.0, size - height)
    return (float(left), float(top), float(left + width), float(top + height)), view % 2 == 1


def augment(image: np.ndarray, image_id: str, view: int) -> np.ndarray:
    """View `view` of one (S, S, 3) RGB image in [0, 255], as float32 of the same shape."""
    from PIL import Image

    size = image.shape[0]
    if image.shape != (size, size, 3):
        raise ValueError(f"augment takes a square RGB image, not shape {image.shape}")
    box, mirrored = view_box(image_id, view, size)
    pixels = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    out = np.asarray(pixels.resize((size, size), Image.Resampling.BILINEAR, box=box), np.float32)
    return np.ascontiguousarray(out[:, ::-1]) if mirrored else out


def augment_batch(images: np.ndarray, image_ids: Sequence[str], view: int) -> np.ndarray:
    """View `view` of each image of an (n, S, S, 3) batch, `image_ids` row for row."""
    if len(image_ids) != len(images):
        raise ValueError(f"{len(images)} images but {len(image_ids)} ids")
    out = np.empty(images.shape, np.float32)
    for i, (image, image_id) in enumerate(zip(images, image_ids, strict=True)):
        out[i] = augment(image, image_id, view)
    return out
