"""load_image: Keras-identical on plain JPEGs, odd valid forms normalised, invalid files refused."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from featurestore import images
from featurestore.images import INTERPOLATION, ImageError, load_image
from tests.conftest import write_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _png(width: int, height: int, bit_depth: int, color_type: int, raw: bytes = b"") -> bytes:
    """A PNG written by hand: Pillow cannot write 16-bit RGB, nor a header-only giant."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(raw)) if raw else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def _png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (gray for 2-D, RGB for 3-D) of the given uint16 pixels."""
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row
    return _png(width, height, 16, 2 if pixels.ndim == 3 else 0, raw)


def _noise(seed: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _reason(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageError) as info:
        load_image(path, 16, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- plain images ---------------------------------------------------------------------------


def test_output_shape_dtype_and_range(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.jpg", seed=1)
    out = load_image(path, (20, 30))
    assert out.shape == (20, 30, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255 and out.max() > 100
    assert load_image(path, 24).shape == (24, 24, 3)
    assert INTERPOLATION == "pil-bilinear"


def test_lossless_image_at_its_own_size_is_exact(tmp_path: Path) -> None:
    pixels = _noise(2)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png", (48, 64)), pixels)


@pytest.mark.parametrize("size", [0, (0, 5), (5, -1), (1, 2, 3), 2.5, (4.0, 4), True, "8"])
def test_bad_size_is_a_value_error(tmp_path: Path, size: object) -> None:
    path = write_image(tmp_path / "a.png", seed=1)
    with pytest.raises(ValueError, match="size must be"):
        load_image(path, size)  # type: ignore[arg-type]


def test_bad_max_pixels_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(write_image(tmp_path / "a.png", seed=1), 4, max_pixels=0)


@pytest.mark.e2e  # imports Keras (TensorFlow): seconds
def test_bit_identical_to_keras_load_img_on_real_photos(photos_dir: Path) -> None:
    keras_utils = pytest.importorskip("keras.utils")
    paths = sorted((photos_dir / "cats").glob("*.jpg"))[:2] + sorted((photos_dir / "dogs").glob("*.jpg"))[:2]
    assert len(paths) == 4
    for path in paths:
        with Image.open(path) as image:  # the premise: plain RGB JPEGs, nothing to rotate
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.getexif().get(0x0112, 1) == 1
        for size in [(224, 224), (150, 120)]:
            keras = keras_utils.img_to_array(
                keras_utils.load_img(path, target_size=size, interpolation="bilinear")
            )
            ours = load_image(path, size)
            assert ours.dtype == keras.dtype == np.float32
            np.testing.assert_array_equal(ours, keras)


# --- odd valid forms ------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((40, 80, 3), np.uint8)  # stored landscape: red left half, blue right half
    pixels[:, :40] = RED
    pixels[:, 40:] = BLUE
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rotated.jpg", (80, 40))  # upright: portrait
    # Rotating clockwise puts the stored left (red) half on top.
    np.testing.assert_allclose(out[5, 20], RED, atol=30)
    np.testing.assert_allclose(out[75, 20], BLUE, atol=30)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_and_bilevel(tmp_path: Path, mode: str) -> None:
    values = np.array([[0, 77], [200, 255]], np.uint8)
    image = Image.fromarray(values).convert(mode) if mode == "L" else Image.fromarray(values > 127)
    image.save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png", (2, 2))
    expected = values if mode == "L" else np.where(values > 127, 255, 0)
    np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=2))


def test_gray_with_alpha_composites_over_white(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (50, 255))
    image.putpixel((1, 0), (50, 0))
    image.save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png", (1, 2))
    np.testing.assert_array_equal(out[0], [[50, 50, 50], WHITE])


def test_palette_without_and_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([*RED, *GREEN] + [0] * 762)
    image.putdata([0, 1])
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png", (1, 2))[0], [RED, GREEN])
    image.save(tmp_path / "pt.png", transparency=1)  # index 1 (green) is transparent
    np.testing.assert_array_equal(load_image(tmp_path / "pt.png", (1, 2))[0], [RED, WHITE])
    image.save(tmp_path / "pt.gif", transparency=1)
    np.testing.assert_array_equal(load_image(tmp_path / "pt.gif", (1, 2))[0], [RED, WHITE])


def test_rgba_composites_over_white(tmp_path: Path) -> None:
    pixels = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [255, 0, 0, 128]]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png", (1, 3))[0]
    np.testing.assert_array_equal(out[0], RED)
    np.testing.assert_array_equal(out[1], WHITE)  # not the black stored under alpha 0
    np.testing.assert_allclose(out[2], [255, 127, 127], atol=1)


def test_cmyk_jpeg_red_comes_out_red(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    red, green, blue = load_image(tmp_path / "cmyk.jpg", 16)[8, 8]
    assert red > 200 and green < 60 and blue < 60


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    pixels = np.array([[0, 32768, 65535]], np.uint16)
    (tmp_path / "g16.png").write_bytes(_png16(pixels))
    with Image.open(tmp_path / "g16.png") as image:
        assert image.mode.startswith("I")  # the wide path is the one under test
    out = load_image(tmp_path / "g16.png", (1, 3))[0]
    np.testing.assert_array_equal(out, [[0] * 3, [128] * 3, [255] * 3])


def test_16bit_rgb_png_keeps_its_colours(tmp_path: Path) -> None:
    pixels = np.zeros((1, 2, 3), np.uint16)
    pixels[0, 0] = (32768, 0, 65535)
    pixels[0, 1] = (0, 16384, 0)
    (tmp_path / "rgb16.png").write_bytes(_png16(pixels))
    out = load_image(tmp_path / "rgb16.png", (1, 2))[0]
    np.testing.assert_allclose(out, [[128, 0, 255], [0, 64, 0]], atol=1)


def test_int32_mode_is_taken_as_16_bit() -> None:
    wide = Image.fromarray(np.array([[0, 32768, 70000, -5]], np.int32))
    assert wide.mode == "I"
    out = np.asarray(images._to_rgb(wide))[0, :, 0]
    np.testing.assert_array_equal(out, [0, 128, 255, 0])


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    with Image.open(tmp_path / "anim.gif") as image:
        assert image.n_frames == 3
    np.testing.assert_array_equal(load_image(tmp_path / "anim.gif", 8)[4, 4], RED)


@pytest.mark.parametrize("real_format", ["PNG", "BMP", "GIF", "WEBP"])
def test_extension_that_lies_about_the_format(tmp_path: Path, real_format: str) -> None:
    Image.new("RGB", (8, 8), BLUE).save(tmp_path / "liar.jpg", format=real_format, lossless=True)
    np.testing.assert_array_equal(load_image(tmp_path / "liar.jpg", 8)[3, 3], BLUE)


# --- invalid files --------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "empty file (0 bytes)"


@pytest.mark.parametrize("content", [b"hello, I am text\n", b"\xff\xd8 not really a jpeg"])
def test_not_an_image(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "text.jpg").write_bytes(content)
    assert _reason(tmp_path / "text.jpg") == "not an image (cannot identify format)"


def test_format_outside_the_allowed_list_is_not_opened(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "tiff.jpg", format="TIFF")
    assert _reason(tmp_path / "tiff.jpg") == "not an image (cannot identify format)"


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".gif"])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file_is_refused_not_gray_filled(tmp_path: Path, suffix: str, keep: float) -> None:
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(_noise(3)).save(whole)
    data = whole.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: int(len(data) * keep)])
    assert _reason(tmp_path / f"cut{suffix}") == "truncated image data"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_refuses_to_decode_when_truncated_images_were_allowed_globally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_image(tmp_path / "a.jpg", seed=1)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert "LOAD_TRUNCATED_IMAGES" in _reason(path)


def test_corrupt_pixel_data(tmp_path: Path) -> None:
    raw = b"".join(b"\x00" + _noise(4, (32, 1)).tobytes() for _ in range(32))
    data = bytearray(_png(32, 32, 8, 2, raw))
    data[60] ^= 0xFF  # inside the compressed IDAT stream; Pillow skips IDAT checksums
    (tmp_path / "broken.png").write_bytes(bytes(data))
    reason = _reason(tmp_path / "broken.png")
    assert reason == "corrupt image data: broken data stream when reading image file"


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    # Header-only PNGs: decoding would fail, so refusal proves the check comes first.
    (tmp_path / "huge.png").write_bytes(_png(20_000, 10_000, 8, 2))  # > 2x Pillow's limit
    assert _reason(tmp_path / "huge.png") == "decompression bomb: 200000000 pixels > limit 89478485"
    (tmp_path / "big.png").write_bytes(_png(10_000, 10_000, 8, 2))  # Pillow only warns
    with pytest.warns(Image.DecompressionBombWarning):
        reason = _reason(tmp_path / "big.png")
    assert reason == "decompression bomb: 100000000 pixels > limit 89478485"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # where Pillow's warning is raised, it is still ours
        assert _reason(tmp_path / "big.png") == reason


def test_max_pixels_is_per_call_not_global(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.png", seed=1)  # 40 x 32
    before = Image.MAX_IMAGE_PIXELS
    assert _reason(path, max_pixels=100) == "decompression bomb: 1280 pixels > limit 100"
    assert load_image(path, 8, max_pixels=1280).shape == (8, 8, 3)
    assert before == Image.MAX_IMAGE_PIXELS


def test_unreadable_paths(tmp_path: Path) -> None:
    (tmp_path / "folder.jpg").mkdir()
    assert _reason(tmp_path / "folder.jpg") == "cannot read file: is a directory"
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    assert _reason(tmp_path / "broken.jpg") == "cannot read file: not found (broken symbolic link)"
    assert _reason(tmp_path / "missing.jpg") == "cannot read file: not found"


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "secret.jpg", seed=1)
    if os.geteuid() != 0:  # root reads anything: simulate the error there
        path.chmod(0)
        assert _reason(path) == "cannot read file: permission denied"
        path.chmod(0o644)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images, "open", denied, raising=False)
    assert _reason(path) == "cannot read file: permission denied"


def test_unexpected_exception_types_become_image_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_image(tmp_path / "a.png", seed=1)

    def explode(image: Image.Image) -> Image.Image:
        raise KeyError("surprise")

    monkeypatch.setattr(images.ImageOps, "exif_transpose", explode)
    assert _reason(path) == "cannot decode image: KeyError: 'surprise'"


# --- resources and threads ------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_file_handle_released_even_for_lazy_formats(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_image(tmp_path / "anim.gif", 8)
        with pytest.raises(ImageError):
            load_image(tmp_path / "bad.png", 8)
    assert len(os.listdir("/proc/self/fd")) == before


def test_threads_give_the_same_results_as_one_thread(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i}.jpg", seed=i, size=(90, 70)) for i in range(16)]
    serial = [load_image(p, (32, 48)) for p in paths]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda p: load_image(p, (32, 48)), paths * 4))
    for i, out in enumerate(threaded):
        np.testing.assert_array_equal(out, serial[i % len(paths)])
