"""Decode one image file into an RGB float32 model input, or fail with a one-line `ImageError`.

For ordinary 8-bit RGB JPEGs the output is bit-identical to what Keras users get from
``img_to_array(load_img(path, target_size=(h, w), interpolation="bilinear"))``. Other valid
forms are normalised to 8-bit RGB first (see `_to_rgb`); invalid files never become data.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from featurestore.errors import FeaturestoreError
from featurestore.fingerprint import DECODERS, DEFAULT_DECODER

__all__ = [
    "DECODERS",
    "DEFAULT_DECODER",
    "DEFAULT_MAX_PIXELS",
    "INTERPOLATION",
    "MAX_FILE_BYTES",
    "ImageError",
    "decode_image",
    "load_image",
    "read_file",
]

# Recorded in the store's fingerprint: change it (and the extractor version) if the resize changes.
INTERPOLATION = "pil-bilinear"

# Named decoders, recorded in the fingerprint (a store never mixes them):
# - "pil": full decode, then the bilinear resize; bit-identical to keras.utils.load_img.
# - "pil-draft": JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers
#   the input size (Pillow's draft mode, libjpeg's scaled IDCT), then the same bilinear resize.
#   Several times faster on photos much larger than the input; the maps differ slightly.

# Pillow's own default `Image.MAX_IMAGE_PIXELS`; we apply the limit ourselves, per call, instead
# of changing Pillow's process-wide setting.
DEFAULT_MAX_PIXELS = 89_478_485

# Files are read whole (hashed and decoded from one read); nothing within the pixel limit
# comes near this, and it bounds the memory of the files in flight.
MAX_FILE_BYTES = 512 * 2**20

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
    path: str | Path,
    size: int | tuple[int, int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decoder: str = DEFAULT_DECODER,
) -> np.ndarray:
    """Decode ``path`` into an ``(H, W, 3)`` float32 RGB array in [0, 255].

    ``size`` is ``(H, W)`` or one int for a square. Images above ``max_pixels`` are refused
    before decoding. Any failure to read or decode the file raises `ImageError`; a bad ``size``
    or ``max_pixels`` is a programming error and raises `ValueError`. Thread-safe.
    """
    _check_arguments(size, max_pixels, decoder)
    try:
        data, _ = read_file(path)
    except OSError as error:
        raise ImageError(_describe(error, path)) from error
    return decode_image(data, size, max_pixels=max_pixels, decoder=decoder)


def read_file(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> tuple[bytes, os.stat_result]:
    """The bytes of ``path`` and its stat taken through the same open handle before reading.

    Hash and decode these same bytes: a file rewritten while it is read then gets the id of
    the content that was decoded. The stat is taken first, so a rewrite after it leaves a
    newer mtime on disk and the next run sees the file as changed. A file above ``max_bytes``
    is refused (`ImageError`) unread; read errors raise `OSError`.
    """
    with open(path, "rb") as handle:
        stat = os.fstat(handle.fileno())
        if stat.st_size > max_bytes:
            raise ImageError(f"file too large ({stat.st_size} bytes > limit {max_bytes})")
        data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew while read
            raise ImageError(f"file too large (> limit {max_bytes} bytes)")
        return data, stat


def decode_image(
    data: bytes,
    size: int | tuple[int, int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decoder: str = DEFAULT_DECODER,
    dtype: str = "float32",
) -> np.ndarray:
    """`load_image` on a file's bytes (see `read_file`): the same array or the same `ImageError`.

    ``dtype="uint8"`` returns the same pixels unconverted (a quarter of the bytes to pass
    between processes; ``astype(float32)`` later gives the float32 array exactly).
    """
    height, width = _check_arguments(size, max_pixels, decoder)
    try:
        if not data:
            raise ImageError("empty file (0 bytes)")
        image = _decode(data, max_pixels, (width, height) if decoder == "pil-draft" else None)
        image = _to_rgb(image)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8 if dtype == "uint8" else np.float32)
    except ImageError:
        raise
    except Exception as error:  # Pillow raises many types; none may escape as anything else.
        raise ImageError(_describe(error, "")) from error


def _check_arguments(size: int | tuple[int, int], max_pixels: int, decoder: str) -> tuple[int, int]:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    return _target_size(size)


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


def _decode(data: bytes, max_pixels: int, draft: tuple[int, int] | None) -> Image.Image:
    """Fully decode the first frame, upright. ``draft``: the (W, H) that a JPEG may be
    DCT-downscaled to cover (the "pil-draft" decoder)."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone switched Pillow to fill missing data with gray: truncated files would then
        # decode "successfully". Refuse rather than put invented pixels in the store.
        raise ImageError(
            "refusing to decode: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True "
            "(truncated files would pass as images)"
        )
    with io.BytesIO(data) as handle:
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
            if draft is not None and image.format == "JPEG":
                # Square request: each side still covers the input after an EXIF rotation.
                side = max(draft)
                image.draft("RGB", (side, side))
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
