"""Turning probability maps into masks and cutouts (written once, used by every front end)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["probability_to_mask", "make_cutout", "parse_color"]


def probability_to_mask(prob: np.ndarray) -> Image.Image:
    """float ``H×W`` in [0, 1] → 8-bit ``L`` image (rounded, not truncated)."""
    return Image.fromarray(np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def parse_color(color: Sequence[int]) -> tuple[int, int, int, int]:
    """(R, G, B) or (R, G, B, A) with each in 0…255 → RGBA tuple; anything else is a ValueError."""
    values = tuple(int(c) for c in color)
    if len(values) not in (3, 4) or any(not 0 <= c <= 255 for c in values):
        raise ValueError(f"a colour is 3 or 4 integers in 0…255 (R G B [A]), got {list(color)}")
    return values if len(values) == 4 else (*values, 255)


def make_cutout(image: Image.Image, mask: Image.Image, *, bgcolor: Sequence[int] | None = None) -> Image.Image:
    """The image's colours with ``mask`` as alpha (multiplied by the image's own alpha, if any).

    Colours are kept straight (not premultiplied), so soft edges keep the object's colour; with
    ``bgcolor`` the cutout is composited over that colour.
    """
    if mask.size != image.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")
    rgba = image.convert("RGBA")
    alpha = mask
    if image.mode in ("RGBA", "LA", "PA"):
        own = np.asarray(rgba.getchannel("A"), dtype=np.uint16)
        alpha = Image.fromarray(((np.asarray(mask, dtype=np.uint16) * own + 127) // 255).astype(np.uint8), "L")
    rgba.putalpha(alpha)
    if bgcolor is not None:
        background = Image.new("RGBA", image.size, parse_color(bgcolor))
        rgba = Image.alpha_composite(background, rgba)
    return rgba
