"""Drift on real photos through the real ImageNet VGG16: shifted nights flagged, same ones quiet.

Reuses the session's real store (200 cats + 200 dogs); only 2 x 40 new images go through the
model: a grayscale night (a real nightly extract on a copy of the store) and a rotated one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from featurestore import exitcodes
from featurestore.drift import DEFAULT_THRESHOLD, compare, pool_maps
from featurestore.drift_check import check_drift
from featurestore.extractor import Extractor
from featurestore.fsutil import file_sha256
from featurestore.images import load_image
from featurestore.report import build_report
from featurestore.runs import list_runs
from featurestore.store import open_store
from tests.conftest import E2E_PER_CLASS, REPO_ROOT, built_once

pytestmark = pytest.mark.e2e

TONIGHT = 20  # new photos per class in a shifted night


def tonight_photos(photos_dir: Path) -> list[tuple[str, Path]]:
    """(class, photo) of photos the real store does not hold."""
    return [
        (name, path)
        for name in ("cats", "dogs")
        for path in sorted((photos_dir / name).iterdir())[E2E_PER_CLASS : E2E_PER_CLASS + TONIGHT]
    ]


@pytest.fixture(scope="module")
def extractor(imagenet_weights: Path) -> Extractor:
    return Extractor(weights=str(imagenet_weights), input_size=150, batch_size=32)


@pytest.fixture(scope="module")
def earlier(real_store: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    data = open_store(real_store).load()
    return pool_maps(data.features), data.labels, data.class_names


@pytest.fixture(scope="module")
def rotated_night(
    photos_dir: Path, imagenet_weights: Path, extractor: Extractor, request: pytest.FixtureRequest
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of the tonight photos rotated 90 degrees, cached in pytest's cache."""
    cache = Path(request.config.cache.mkdir("featurestore_drift"))

    def build(path: Path) -> None:
        photos = tonight_photos(photos_dir)
        pixels = np.stack([np.rot90(load_image(p, 150)) for _, p in photos]).copy()
        pooled = pool_maps(extractor.embed(pixels)["features"])
        labels = np.array([0 if name == "cats" else 1 for name, _ in photos])
        with open(path, "wb") as handle:
            np.savez(handle, pooled=pooled, labels=labels)

    path = built_once(cache / f"rotated_{TONIGHT}_{file_sha256(imagenet_weights)[:16]}.npz", build)
    data = np.load(path)
    return data["pooled"], data["labels"]


def copy_of(real_store: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the real store and a source tree that holds exactly its images."""
    store = tmp_path / "store"
    shutil.copytree(real_store, store, ignore=shutil.ignore_patterns(".lock", "runs"))
    source = tmp_path / "images"
    for image in open_store(store).images():
        link = source / image.relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(image.path.resolve())  # same bytes, size and mtime: unchanged tonight
    return store, source


def test_a_grayscale_night_is_flagged_in_a_real_nightly_run(
    real_store: Path, photos_dir: Path, imagenet_weights: Path, tmp_path: Path
) -> None:
    store, source = copy_of(real_store, tmp_path)
    for name, photo in tonight_photos(photos_dir):
        with Image.open(photo) as image:
            image.convert("L").convert("RGB").save(source / name / f"gray_{photo.stem}.jpg", quality=90)
    command = [sys.executable, "-m", "classifiers.cli", "extract", str(source), "--store", str(store)]
    command += ["--weights", str(imagenet_weights), "--json", "--fail-on-drift", str(DEFAULT_THRESHOLD)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO_ROOT,
    )
    # The nightly command itself: committed, checked, and exit 4 for the scheduler.
    assert result.returncode == exitcodes.DRIFT, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["new"], summary["computed"], summary["unchanged"]) == (
        2 * TONIGHT,
        2 * TONIGHT,
        2 * E2E_PER_CLASS,
    )
    drift = summary["drift"]
    assert drift["drifted"] and drift["overall"]["auc"] >= DEFAULT_THRESHOLD, result.stdout
    assert all(c["drifted"] for c in drift["per_class"])
    [record] = list_runs(store)
    schema = json.loads((REPO_ROOT / "docs" / "schemas" / "run-record.schema.json").read_text())
    jsonschema.validate(record, schema)
    assert record["exit_code"] == exitcodes.DRIFT and record["drift"] == drift
    assert len(open_store(store)) == 2 * (E2E_PER_CLASS + TONIGHT)  # tonight's rows are kept
    page = build_report(store, tmp_path / "report").read_text()
    assert 'alt="Drift AUC over time"' in page and 'alt="Class balance over time"' in page


def test_a_rotated_night_is_flagged(earlier, rotated_night) -> None:
    rows, labels, names = earlier
    report = compare(rows, labels, *rotated_night, names)
    assert report.drifted and report.overall.auc >= DEFAULT_THRESHOLD, report.line()


def test_a_night_of_another_class_is_flagged(earlier) -> None:
    rows, labels, names = earlier
    cats, dogs = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    report = compare(rows[cats], labels[cats], rows[dogs[: 2 * TONIGHT]], labels[dogs[: 2 * TONIGHT]], names)
    assert report.drifted and report.overall.auc >= DEFAULT_THRESHOLD, report.line()
    assert report.class_balance.total_variation == 1.0


def test_same_distribution_nights_are_quiet(real_store: Path) -> None:
    store = open_store(real_store)
    ids = np.array(sorted(image.image_id for image in store.images()))
    for seed in range(5):
        tonight = set(np.random.default_rng(seed).choice(ids, 2 * TONIGHT, replace=False))
        report = check_drift(store, tonight, seed=seed)
        assert report.overall.n_tonight == 2 * TONIGHT
        assert not report.drifted, report.line()
