"""Decoding one image file to uint8 pixels, or saying in one line why it cannot be.

Image files come from users' folders and the internet: a PNG of 0.9 MB can declare 30,000 × 30,000
pixels, a JPEG can stop half-way. The size is checked from the header before anything is decoded,
and whatever Pillow raises while decoding a file it recognised becomes a ``DataError`` naming the
file. A file Pillow does not recognise at all is not an image: the caller skips it, as it skips
``notes.txt``. Pixels are read as stored (EXIF orientation is not applied), as TensorFlow's
decoders and the deploy bundle's ``run.py`` read them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgecompress.errors import DataError

#: pixels per image beyond which a file is refused before decoding: reading and resizing one image
#: takes about 20 bytes per pixel at its peak, so this keeps one image under 1 GiB
MAX_IMAGE_PIXELS = 40_000_000
#: 8-bit modes read as one grey channel (16-bit and float grey are scaled apart); anything else becomes
#: RGB: alpha dropped, CMYK and palettes converted
GREY_MODES = ("1", "L", "LA", "La")


def decode(file: Path, mask: bool = False) -> np.ndarray | None:
    """(H, W) grey or (H, W, 3) RGB uint8 pixels; a mask as (H, W) stored values. None: not an image."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        # Pillow warns about odd but readable files (EXIF, palettes); only its bomb warning matters here.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(file)
        except UnidentifiedImageError:
            return None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(file, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party decoder is a bad file
            raise _unreadable(file, exc) from None
        with image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_large(file, f"it declares {width} × {height} pixels")
            if width == 0 or height == 0:
                raise DataError(f"image {file} has no pixels ({width} × {height})", "remove it from the folder")
            if mask and image.mode not in ("L", "P"):
                # A palette mask stores class indices in its pixels; converting it would map them to colours.
                raise DataError(
                    f"mask {file} is a {image.mode} image",
                    "save masks as single-channel (L or P mode) PNGs whose pixel values are class indices",
                )
            try:
                return np.asarray(image, dtype=np.uint8) if mask else _pixels(image, file)
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated data, broken chunks, unsupported conversions
                raise _unreadable(file, exc) from None


def _pixels(image, file: Path) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I"):
        values = np.asarray(image).astype(np.float32)
        sixteen = mode.startswith("I;16") or float(np.max(values)) > 255  # 16-bit PNGs open as I;16 or I
        if float(np.min(values)) < 0 or float(np.max(values)) > 65535:
            raise DataError(f"image {file} holds values outside 0–65535", "save it as an 8- or 16-bit PNG of raw pixels")
        return np.round(values / 257.0 if sixteen else values).astype(np.uint8)  # 0–65535 → 0–255
    if mode == "F":
        values = np.asarray(image)
        if not np.all(np.isfinite(values)) or float(np.min(values)) < 0 or float(np.max(values)) > 255:
            raise DataError(f"image {file} holds float pixels outside 0–255", "save it as an 8-bit PNG/JPEG of raw pixels")
        return np.round(values).astype(np.uint8)
    return np.asarray(image.convert("L" if mode in GREY_MODES else "RGB"), dtype=np.uint8)


def _too_large(file: Path, why: str) -> DataError:
    return DataError(
        f"image {file} is too large to decode safely ({why}; the limit is {MAX_IMAGE_PIXELS // 1_000_000} "
        "megapixels): a decompression bomb, or a picture far larger than any model input",
        "downscale it, or remove it from the folder",
    )


def _unreadable(file: Path, exc: BaseException) -> DataError:
    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return DataError(f"image {file} is damaged or unreadable ({why})", "re-save or re-download it, or remove it from the folder")
