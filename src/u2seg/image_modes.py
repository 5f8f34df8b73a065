"""Pixels of any Pillow mode or NumPy dtype to 8-bit ``"RGB"``, or ``"RGBA"`` when transparent.

Bit-depth rules (the same whichever decoder produced the pixels):

* 16-bit samples (``I;16*`` modes, 16-bit RGB/RGBA, ``uint16`` arrays) map to 8 bits
  by ``round(v / 257)``, which sends 0 -> 0 and 65535 -> 255 exactly.
* Pillow mode ``"I"`` (32-bit signed) is treated as 16-bit data clipped to 0..65535:
  in practice it holds promoted 16-bit files (older Pillow opened 16-bit PNGs as
  ``"I"``); scaling by the full 32-bit range would turn every real image black.
* Float pixels decoded from a file (mode ``"F"``, float TIFFs read by OpenCV) have no
  agreed range: if the largest finite value is <= 1 they are read as 0..1, otherwise
  as 0..255; either way clipped and rounded. Float *NumPy arrays* passed by a caller
  are always read as 0..1 (the documented contract), so a value like 1.0001 from
  resampling is clipped, not taken as a hint that the whole array is 0..255.
* NaN becomes 0.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import ImageReadError, one_line

__all__ = ["array_to_image", "from_array", "is_16bit_colour", "to_rgb"]

# Modes whose pixels carry an alpha channel (premultiplied "La"/"RGBa" included).
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
# 16-bit (and promoted 32-bit) grayscale: Pillow's own convert("L") clips these at 255
# instead of scaling, so they go through NumPy.
_WIDE_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _has_transparency(im: Image.Image) -> bool:
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return True
    # Palette whose entries carry alpha (e.g. some WebP/GIF derived images).
    palette = getattr(im, "palette", None)
    return im.mode == "P" and palette is not None and getattr(palette, "mode", "") == "RGBA"


def to_rgb(im: Image.Image, label: str) -> Image.Image:
    """Convert any Pillow mode to "RGB", or "RGBA" when the image has transparency."""
    mode = im.mode
    if mode in _WIDE_GRAY_MODES:
        values = np.asarray(im)
        gray = _uint16_to_uint8(np.clip(values, 0, 65535))
        key = im.info.get("transparency")
        if isinstance(key, int):  # 16-bit PNG colour key (tRNS) -> real alpha
            alpha = np.where(values == key, 0, 255).astype(np.uint8)
            return Image.fromarray(np.dstack([gray, gray, gray, alpha]))
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        gray = _float_to_uint8(np.asarray(im), assume_unit=None)
        return Image.fromarray(gray).convert("RGB")
    if mode == "La":
        # Premultiplied luminance+alpha: Pillow cannot convert it to RGBA (and its
        # La -> LA drops the alpha), so un-premultiply here.
        lum_alpha = np.asarray(im).astype(np.float32)
        lum, alpha = lum_alpha[..., 0], lum_alpha[..., 1]
        safe = np.maximum(alpha, 1.0)
        gray = np.where(alpha > 0, np.minimum(np.rint(lum * 255.0 / safe), 255.0), 0.0).astype(np.uint8)
        return Image.fromarray(np.dstack([gray, gray, gray, alpha.astype(np.uint8)]))
    target = "RGBA" if _has_transparency(im) else "RGB"
    if mode == target:
        return im
    try:
        # Covers 1, L, P, PA, LA, RGBa, RGBX, CMYK, YCbCr, HSV, LAB; the transparency
        # entry of 1/L/P/RGB images becomes alpha here.
        return im.convert(target)
    except (ValueError, OSError) as exc:
        raise ImageReadError(f"{one_line(label)}: unsupported image mode {mode} ({one_line(str(exc))})") from exc


def is_16bit_colour(im: Image.Image) -> bool:
    """True when Pillow will unpack 16-bit-per-channel RGB(A) data (raw modes "RGB;16B" ...)."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    args = im.tile[0][3]
    rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
    return isinstance(rawmode, str) and ";16" in rawmode


def from_array(array: np.ndarray, label: str) -> Image.Image:
    """A caller's array: floats are always 0..1 (the documented contract)."""
    return array_to_image(array, label, unit_floats=True)


def array_to_image(array: np.ndarray, label: str, *, unit_floats: bool) -> Image.Image:
    if array.size == 0:
        raise ImageReadError(f"{one_line(label)}: empty array (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageReadError(
            f"{one_line(label)}: unsupported array shape {array.shape}; expected HxW, HxWx3 or HxWx4"
        )
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b":
        u8 = array.astype(np.uint8) * 255
    elif kind == "u" and size == 1:
        u8 = array
    elif kind == "u" and size == 2:
        u8 = _uint16_to_uint8(array)
    elif kind == "f":
        u8 = _float_to_uint8(array, assume_unit=True if unit_floats else None)
    else:
        raise ImageReadError(
            f"{one_line(label)}: unsupported pixel type {array.dtype}; expected uint8, uint16, bool or float"
        )
    image = Image.fromarray(np.ascontiguousarray(u8, dtype=np.uint8))
    return image.convert("RGB") if image.mode == "L" else image


def _uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    # (v + 128) // 257 == round(v / 257) for integers: 0 -> 0, 65535 -> 255, and
    # v * 257 round-trips exactly.
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_uint8(values: np.ndarray, *, assume_unit: bool | None) -> np.ndarray:
    """Floats to uint8: 0..1 if assume_unit, 0..255 if False, decided by the data if None."""
    values = np.asarray(values, dtype=np.float32)
    values = np.where(np.isnan(values), np.float32(0), values)
    if assume_unit is None:
        finite = values[np.isfinite(values)]
        assume_unit = finite.size == 0 or float(finite.max()) <= 1.0
    if assume_unit:
        values = np.clip(values, 0.0, 1.0) * np.float32(255)
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)
