"""Decode one image file into an RGB float32 model input, or fail with a one-line `ImageError`.

For ordinary 8-bit RGB JPEGs the output is bit-identical to what Keras users get from
``img_to_array(load_img(path, target_size=(h, w), interpolation="bilinear"))``. Other valid
forms are normalised to 8-bit RGB first (see `_to_rgb`); invalid files never become data.
"""

from __future__ import annotations

import os
import re
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from featurestore.errors import FeaturestoreError

__all__ = ["DEFAULT_MAX_PIXELS", "INTERPOLATION", "ImageError", "load_image"]

# Recorded in the store's fingerprint: change it (and the extractor version) if the resize changes.
INTERPOLATION = "pil-bilinear"

# Pillow's own default `Image.MAX_IMAGE_PIXELS`; we apply the limit ourselves, per call, instead
# of changing Pillow's process-wide setting.
DEFAULT_MAX_PIXELS = 89_478_485

# Only formats that the source extensions name (DIB: the BMP plugin's other name; multi-picture
# camera JPEGs, "MPO", come through the JPEG opener). A file whose extension lies still opens if
# its real format is here, while formats that call out to other programs (EPS runs Ghostscript)
# never do.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "DIB", "WEBP")

# Modes that hold more than 8 bits per sample; Pillow's convert("RGB") would clip them to white.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# Load the format plugins once at import: Pillow registers them lazily on the first open, which
# is not something to race on from several worker threads.
Image.init()

# Our per-call limit replaces Pillow's warning: an image above it is refused with its reason
# (`ImageError`), so the warning would only repeat that on stderr, outside the one-line rule.
# Silenced for its category only, and not per call (warning filters are not thread-safe).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(FeaturestoreError):
    """A file that cannot become model input; ``str(error)`` is a one-line reason."""


def load_image(
    path: str | Path, size: int | tuple[int, int], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode ``path`` into an ``(H, W, 3)`` float32 RGB array in [0, 255].

    ``size`` is ``(H, W)`` or one int for a square. Images above ``max_pixels`` are refused
    before decoding. Any failure to read or decode the file raises `ImageError`; a bad ``size``
    or ``max_pixels`` is a programming error and raises `ValueError`. Thread-safe.
    """
    height, width = _target_size(size)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    try:
        image = _decode(path, max_pixels)
        image = _to_rgb(image)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.float32)
    except ImageError:
        raise
    except Exception as error:  # Pillow raises many types; none may escape as anything else.
        raise ImageError(_describe(error, path)) from error


def _target_size(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair of ints, all positive."""
    pair = (size, size) if isinstance(size, Integral) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def _decode(path: str | Path, max_pixels: int) -> Image.Image:
    """Fully decode the first frame, upright, with the file closed before returning."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone switched Pillow to fill missing data with gray: truncated files would then
        # decode "successfully". Refuse rather than put invented pixels in the store.
        raise ImageError(
            "refusing to decode: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True "
            "(truncated files would pass as images)"
        )
    # Our own handle, so that it is closed here even for formats that Pillow reads lazily (GIF).
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageError("empty file (0 bytes)")
        try:
            image = Image.open(handle, formats=_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Pillow refuses above 2x its global limit (or warns above 1x, an exception where
            # warnings are errors); report it against our limit, in our words.
            match = _BOMB_PIXELS.search(str(error))
            pixels = match.group(1) if match else "too many"
            raise ImageError(f"decompression bomb: {pixels} pixels > limit {max_pixels}") from error
        with image:
            pixels = image.width * image.height
            if pixels > max_pixels:  # the header is read, no pixel is decoded yet
                raise ImageError(f"decompression bomb: {pixels} pixels > limit {max_pixels}")
            # The full decode happens now, so truncation raises here instead of later.
            image.load()
            # exif_transpose always returns a new, loaded image (a copy when nothing to do).
            upright = ImageOps.exif_transpose(image)
    return upright


def _to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any decoded mode to 8-bit RGB.

    8-bit modes go through Pillow's ``convert("RGB")`` exactly as Keras' ``load_img`` does, so
    plain images match Keras bit for bit.
    """
    if image.mode in _WIDE_GRAY_MODES:
        # 16-bit gray (PNG): scale 0..65535 to 0..255 (round(v / 257)); "I" may hold any int32,
        # taken as 16-bit data, which is what Pillow gives for such PNGs.
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        image = Image.fromarray(np.rint(wide / 257.0).astype(np.uint8))
    elif image.mode == "F":
        raise ImageError("unsupported pixel format: 32-bit floating point")
    if image.has_transparency_data:
        # Composite over white rather than dropping alpha: the colour under transparent pixels
        # is arbitrary (often black or leftover data), and transparent backgrounds (cut-out
        # product photos, logos) are drawn to be seen on white pages.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _describe(error: Exception, path: str | Path) -> str:
    """A one-line reason for an exception raised while reading or decoding ``path``."""
    text = " ".join(str(error).split())
    if isinstance(error, UnidentifiedImageError):
        return "not an image (cannot identify format)"
    if isinstance(error, IsADirectoryError):
        return "cannot read file: is a directory"
    if isinstance(error, FileNotFoundError):
        broken = " (broken symbolic link)" if os.path.islink(path) else ""
        return f"cannot read file: not found{broken}"
    if isinstance(error, PermissionError):
        return "cannot read file: permission denied"
    if isinstance(error, OSError) and error.errno is not None:
        return f"cannot read file: {error.strerror or text}"
    if "truncated" in text.lower():
        return "truncated image data"
    if isinstance(error, (OSError, SyntaxError, ValueError, EOFError)):
        return f"corrupt image data: {text}" if text else "corrupt image data"
    return f"cannot decode image: {type(error).__name__}: {text}"
