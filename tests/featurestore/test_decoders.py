"""Named decoders: `pil` is `load_image` bit for bit from the same bytes; `pil-draft` decodes
large JPEGs at a reduced DCT scale, close to `pil`, and is recorded in the fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featurestore import ExtractConfig, run_extract
from featurestore.decoding import decode_file
from featurestore.extractor import Extractor
from featurestore.images import ImageError, decode_image, load_image, read_file
from featurestore.store import StoreError, open_store
from tests.conftest import write_image

SIZE = 32


def smooth_jpeg(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A photo-like JPEG: smooth gradients plus mild noise (draft mode is meant for photos)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = np.stack([np.sin(x / (17 + 5 * c) + seed) * np.cos(y / (23 + 3 * c)) for c in range(3)], -1)
    pixels = np.clip(127 + 100 * base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def test_pil_from_bytes_is_load_image_bit_for_bit(tmp_path: Path) -> None:
    for i, suffix in enumerate([".jpg", ".png", ".bmp", ".gif", ".webp"]):
        path = write_image(tmp_path / f"a{i}{suffix}", seed=i, size=(50, 41))
        data, stat = read_file(path)
        assert stat.st_size == len(data)
        np.testing.assert_array_equal(decode_image(data, SIZE), load_image(path, SIZE))
        pixels = decode_file(path, SIZE).pixels
        assert pixels is not None and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels.astype(np.float32), load_image(path, SIZE))


def test_draft_is_close_to_pil_on_large_jpegs_and_equal_elsewhere(tmp_path: Path) -> None:
    big = smooth_jpeg(tmp_path / "big.jpg", (640, 480), seed=1)
    pil, draft = load_image(big, 150), load_image(big, 150, decoder="pil-draft")
    assert draft.shape == pil.shape == (150, 150, 3) and not np.array_equal(draft, pil)
    assert np.abs(draft - pil).mean() < 4  # of 255: the same picture, rounded differently
    small = smooth_jpeg(tmp_path / "small.jpg", (200, 180), seed=2)  # < 2x the input: no draft
    np.testing.assert_array_equal(load_image(small, 150, decoder="pil-draft"), load_image(small, 150))
    png = write_image(tmp_path / "a.png", seed=3, size=(640, 480))  # not a JPEG: no draft
    np.testing.assert_array_equal(load_image(png, 150, decoder="pil-draft"), load_image(png, 150))
    with pytest.raises(ImageError, match="truncated"):
        decode_image(big.read_bytes()[:5000], 150, decoder="pil-draft")
    with pytest.raises(ValueError, match="decoder must be one of"):
        decode_image(big.read_bytes(), 150, decoder="turbo")


def test_a_store_names_its_decoder_and_never_mixes_them(tmp_path: Path) -> None:
    for i in range(6):
        smooth_jpeg(tmp_path / "images" / ("cats" if i % 2 else "dogs") / f"{i}.jpg", (300, 260), seed=i)
    draft = Extractor(weights="random", input_size=SIZE, batch_size=4, decoder="pil-draft")
    config = ExtractConfig(
        source=tmp_path / "images", store=tmp_path / "s", input_size=SIZE, batch_size=4, progress=False
    )
    run_extract(config, draft)
    store = open_store(tmp_path / "s")
    assert store.fingerprint.decoder == "pil-draft"
    data = store.load()
    pixels = np.stack([load_image(tmp_path / "images" / p, SIZE, decoder="pil-draft") for p in data.paths])
    np.testing.assert_array_equal(data.features, draft.embed(pixels)["features"])
    pil = Extractor(weights="random", input_size=SIZE, batch_size=4)
    assert pil.fingerprint.digest != draft.fingerprint.digest
    with pytest.raises(StoreError, match="decoder: 'pil-draft' != 'pil'"):
        run_extract(config, pil)


def test_files_above_the_byte_limit_are_refused_unread(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", seed=1)
    with pytest.raises(ImageError, match=r"file too large \(\d+ bytes > limit 100\)"):
        read_file(path, max_bytes=100)
    assert decode_file(tmp_path / "missing.png", SIZE).error == "cannot read file (No such file or directory)"
