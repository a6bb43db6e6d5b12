"""Shared bits of the benchmark scripts: where the photos are, a working copy of a subset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = Path(
    os.environ.get("FEATURESTORE_PHOTOS", REPO.parent / "shared" / "datasets" / "cats_vs_dogs")
)


def copy_photos(dest: Path, per_class: int, photos: Path = DEFAULT_PHOTOS, skip: int = 0) -> list[Path]:
    """Copy `per_class` photos of each class (after skipping `skip`) into dest/<class>/."""
    if not (photos / "cats").is_dir():
        raise SystemExit(f"no photos at {photos}; set FEATURESTORE_PHOTOS")
    copied = []
    for class_dir in sorted(p for p in photos.iterdir() if p.is_dir()):
        (dest / class_dir.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(class_dir.iterdir())[skip : skip + per_class]:
            copied.append(Path(shutil.copy2(path, dest / class_dir.name / path.name)))
    return copied


# The bare walk a no-change `extract` is measured against (issue 9): `os.scandir` + one `stat`
# per file, nothing else. Source for a fresh interpreter; defines walk(top) -> files seen.
SCANDIR_WALK = """
import os
def walk(top):
    n = 0
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir():
                    stack.append(e.path)
                else:
                    e.stat()
                    n += 1
    return n
"""


def machine_line() -> str:
    """The CPU model, cores and load average: other agents share these cores."""
    from featurestore.hardware import cpu_flags, cpu_model

    bf16 = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}) or ["no bf16 flags"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"CPU {cpu_model()} x{os.cpu_count()} ({', '.join(bf16)}); load average {load}"
