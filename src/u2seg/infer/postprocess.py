"""Small conversions shared by the Predictor and the refinement (masks, colours)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["to_uint8", "probability_to_mask", "parse_color"]


def to_uint8(values: np.ndarray) -> np.ndarray:
    """floats in [0, 1] → uint8 0…255, rounded half to even (as ``np.rint``) and clipped."""
    import cv2

    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64) or values.ndim not in (2, 3) or values.size == 0:
        return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    # One pass in OpenCV (saturating, rounding) instead of four NumPy temporaries; negative values
    # are floored first because convertScaleAbs takes absolute values.
    return cv2.convertScaleAbs(np.maximum(values, 0.0), alpha=255.0)


def probability_to_mask(prob: np.ndarray) -> Image.Image:
    """float ``H×W`` in [0, 1] → 8-bit ``L`` image."""
    return Image.fromarray(to_uint8(prob), mode="L")


def parse_color(color: Sequence[int]) -> tuple[int, int, int, int]:
    """(R, G, B) or (R, G, B, A) with each in 0…255 → RGBA tuple; anything else is a ValueError."""
    values = tuple(int(c) for c in color)
    if len(values) not in (3, 4) or any(not 0 <= c <= 255 for c in values):
        raise ValueError(f"a colour is 3 or 4 integers in 0…255 (R G B [A]), got {list(color)}")
    return values if len(values) == 4 else (*values, 255)
