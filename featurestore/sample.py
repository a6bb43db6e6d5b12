"""A small labeled image tree that the project draws itself, for the demo and smoke tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circles", "squares")


def make_sample_tree(
    root: str | Path, *, per_class: int = 20, seed: int = 0, with_bad_file: bool = True
) -> Path:
    """Draw `per_class` images of each class (a shape on a noisy background) under root/<class>/.

    With `with_bad_file`, one truncated JPEG is added too, to show how bad input is reported.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = (int(v) for v in rng.integers(96, 220, size=2))
            noise = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
            image = Image.fromarray(noise + rng.integers(0, 150, size=3, dtype=np.uint8))
            draw = ImageDraw.Draw(image)
            r = int(rng.integers(20, min(width, height) // 2))
            cx, cy = int(rng.integers(r, width - r + 1)), int(rng.integers(r, height - r + 1))
            colour = tuple(int(c) for c in rng.integers(100, 256, size=3))
            box = (cx - r, cy - r, cx + r, cy + r)
            (draw.ellipse if name == "circles" else draw.rectangle)(box, fill=colour)
            image.save(root / name / f"{name}_{i:03d}{'.jpg' if i % 2 else '.png'}")
    if with_bad_file:
        good = (root / CLASSES[0] / f"{CLASSES[0]}_001.jpg").read_bytes()
        (root / CLASSES[0] / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root
