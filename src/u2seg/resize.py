"""Resizing images into the network and maps back out, by a named method.

``lanczos`` (Pillow) is the default because it is what rembg and the official weights' users
see; ``fast`` uses OpenCV (area averaging to shrink, bilinear to enlarge), several times faster on
large photos and measured against Lanczos in BENCHMARKS.md before being offered.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["RESAMPLE_METHODS", "resize_rgb", "resize_map"]

_PIL = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC}
RESAMPLE_METHODS = (*_PIL, "fast")


def _cv2_interpolation(src: tuple[int, int], dst: tuple[int, int]) -> int:
    import cv2

    shrinking = dst[0] * dst[1] < src[0] * src[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def resize_rgb(image: Image.Image, size: tuple[int, int], method: str) -> np.ndarray:
    """An image (any mode) → ``uint8 H×W×3`` at ``size`` = (width, height)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if method == "fast":
        import cv2

        pixels = np.asarray(rgb)
        return cv2.resize(pixels, size, interpolation=_cv2_interpolation(rgb.size, size))
    return np.asarray(rgb.resize(size, _PIL[method]))


def resize_map(values: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """A float32 ``h×w`` map → ``H×W`` at ``size`` = (width, height)."""
    if values.shape[::-1] == tuple(size):
        return values
    if method == "fast":
        import cv2

        src = (values.shape[1], values.shape[0])
        return cv2.resize(values, size, interpolation=_cv2_interpolation(src, size))
    return np.asarray(Image.fromarray(values, mode="F").resize(size, _PIL[method]), dtype=np.float32)
