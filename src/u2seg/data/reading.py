"""Reading a sample's files: an image as RGB, a mask as labels. No torch needed.

* **binary** (``num_classes=1``): the mask file's grey level (colour files by luma, 16-bit files
  scaled to 8 bits). A mask whose values are all 0 or 1 is used as it is (0/1 masks); any other is
  thresholded: ``value > 127`` → 1. So 0/255 masks and soft (anti-aliased) masks like DUTS' work;
  the official U²-Net code trains on the soft values (``mask / max``), u2seg on binarised ones.
* **multi-class** (``num_classes >= 2``): the stored values as they are: palette PNGs (mode "P")
  give their indices, grayscale PNGs their grey values. 255 (:data:`IGNORE_INDEX`) means
  "ignore". A colour (RGB) mask whose channels differ is refused: masks must hold class indices,
  not colours.

The datasets (:mod:`u2seg.data.datasets`) read their samples with these, and check them with the
private helpers here (stored values, colour, values that are not class indices).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageReadError, U2SegError, collapse_whitespace
from ..image_io import load_image, upright

__all__ = ["IGNORE_INDEX", "binarize", "read_image", "read_mask"]

IGNORE_INDEX = 255


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file → ``uint8 H×W×3`` RGB (alpha dropped, as inference does; EXIF orientation
    applied). Raises :class:`~u2seg.errors.ImageReadError` (one line naming the file)."""
    image = load_image(Path(path))
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def _open_mask(path: Path) -> Image.Image:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(f"{path}: empty file")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return upright(image)  # the same orientation rule as load_image
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (cannot identify image file)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        text = collapse_whitespace(exc) or type(exc).__name__
        raise ImageReadError(f"{path}: cannot decode mask ({text})") from None


def _mask_values(path: Path) -> tuple[np.ndarray, bool]:
    """The stored values of a multi-class mask as ``int64 H×W``, and whether it is in colour."""
    image = _open_mask(path)
    mode = image.mode
    if mode in ("P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.int64), False
    if mode in ("LA", "PA"):
        return np.asarray(image)[..., 0].astype(np.int64), False
    if mode == "F":
        values = np.asarray(image)
        return np.where(np.isfinite(values), np.rint(values), -1).astype(np.int64), False
    rgb = np.asarray(image.convert("RGB"))
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return rgb[..., 0].astype(np.int64), not grey


_COLOUR_SPREAD = 32  # channels further apart than this make a binary mask "colour" (JPEG noise stays below)


def _binary_levels(path: Path) -> tuple[np.ndarray, bool]:
    """The grey levels (``uint8 H×W``) of a binary mask, and whether it is in colour."""
    rgb = np.asarray(load_image(path).convert("RGB"))
    red = rgb[..., 0]
    if np.array_equal(red, rgb[..., 1]) and np.array_equal(red, rgb[..., 2]):  # grey: the usual case, and cheap
        return np.ascontiguousarray(red), False
    spread = int((rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)).max())
    return np.asarray(Image.fromarray(rgb).convert("L")), spread > _COLOUR_SPREAD


def binarize(levels: np.ndarray) -> np.ndarray:
    """Grey levels → 0/1 labels: all values 0 or 1 → as they are; otherwise ``> 127`` → 1."""
    if levels.size and int(levels.max()) <= 1:
        return levels.astype(np.uint8)
    return (levels > 127).astype(np.uint8)


def _bad_values(values: np.ndarray, num_classes: int) -> np.ndarray:
    """Distinct values that are neither a class index nor the ignore index."""
    distinct = np.unique(values)
    return distinct[((distinct < 0) | (distinct >= num_classes)) & (distinct != IGNORE_INDEX)]


def _describe_values(values: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", … ({len(values)} values)" if len(values) > limit else "")


def read_mask(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """A mask file → ``uint8 H×W`` labels: 0/1 when ``num_classes == 1`` (see :func:`binarize`),
    class indices with 255 = ignore otherwise.

    Raises:
        ImageReadError: missing or undecodable file.
        U2SegError: (multi-class) a colour mask, or values ≥ ``num_classes`` other than 255.
    """
    path = Path(path)
    if num_classes == 1:
        return binarize(_binary_levels(path)[0])
    values, colour = _mask_values(path)
    if colour:
        raise U2SegError(f"{path}: colour (RGB) mask; multi-class masks must hold class indices "
                         "(palette or grayscale PNG)")
    bad = _bad_values(values, num_classes)
    if bad.size:
        raise U2SegError(f"{path}: mask values {_describe_values(bad)} are not class indices "
                         f"(0..{num_classes - 1}) or {IGNORE_INDEX} (ignore)")
    return values.astype(np.uint8)
