"""Image and mask resized together, for the transforms and the decode-once cache: the image exactly
as inference resizes it, the mask so that its labels stay labels and line up with the image.

:class:`PairResize` (``height×width``) and :class:`LongestSideResize` (aspect kept) are
albumentations steps of the recipes in :mod:`.transforms`; :func:`resize_pair` gives the same
pixels outside a pipeline (:mod:`.cache` stores them); :func:`resize_mask` is the mask half.

Resize filters: images are resized exactly as inference resizes them
(:func:`u2seg.resize.resize_rgb`; ``resample="lanczos"`` by default, Pillow's Lanczos,
which low-pass filters when shrinking). OpenCV's filters, which albumentations' own ``Resize``
uses, give different pixels: on scikit-image's astronaut, coffee and rocket photos resized to
320×320, mean |Δ| against Pillow's Lanczos in 0..255 units was 1.9-2.3 (INTER_LANCZOS4), 1.1-1.5
(INTER_LINEAR) and 1.0-1.4 (INTER_AREA), max |Δ| 30-80 (tests/test_data.py measures it). Masks:
multi-class masks use nearest neighbour (Pillow's, which samples pixel centres like the image
filters; OpenCV's INTER_NEAREST samples corners: 8→4 px picks 0, 2, 4, 6 instead of 1, 3, 5, 7,
a shift of half an output pixel against the image); binary masks are resized as 0/255 with Pillow's
bilinear filter (which averages the whole footprint when shrinking) and re-thresholded at 128,
i.e. a majority vote that keeps edges aligned with the image and thin parts from aliasing away.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # else: a PyPI request on every import

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.core.type_definitions import Targets  # noqa: E402
from PIL import Image  # noqa: E402

from ..resize import RESAMPLE_METHODS, resize_rgb  # noqa: E402

__all__ = ["LongestSideResize", "PairResize", "check_resample", "resize_image", "resize_mask", "resize_pair"]


def check_resample(resample: str) -> None:
    """Raise ``ValueError`` unless ``resample`` names an inference resize method."""
    if resample not in RESAMPLE_METHODS:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE_METHODS)}, not {resample!r}")


def resize_image(image: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """``uint8 H×W×3`` → ``size`` = (width, height), by the inference resize (unchanged when it
    already has that size)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return resize_rgb(Image.fromarray(np.ascontiguousarray(image)), size, resample)


def resize_mask(mask: np.ndarray, size: tuple[int, int], *, binary: bool) -> np.ndarray:
    """A ``uint8 H×W`` label mask → ``size`` = (width, height).

    Binary (0/1): resized as 0/255 with Pillow's bilinear filter, then ``>= 128`` → 1 (a majority
    vote over each output pixel's footprint). Multi-class: Pillow's nearest neighbour, so class
    indices and 255 (ignore) are never blended.
    """
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    if binary:
        scaled = Image.fromarray((mask > 0).astype(np.uint8) * 255)
        return (np.asarray(scaled.resize(size, Image.Resampling.BILINEAR)) >= 128).astype(np.uint8)
    return np.asarray(Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
                      .resize(size, Image.Resampling.NEAREST))


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int, resample: str, *,
                binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask to ``size×size`` exactly as :class:`PairResize` does (the decode-once cache
    stores these pixels)."""
    return resize_image(image, (size, size), resample), resize_mask(mask, (size, size), binary=binary)


class PairResize(A.DualTransform):
    """Resize to ``height×width``: the image as inference does (``resample``), the mask with
    :func:`resize_mask`."""

    _targets = (Targets.IMAGE, Targets.MASK)

    def __init__(self, height: int, width: int, *, resample: str = "lanczos", binary: bool = True,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        check_resample(resample)
        if min(height, width) < 1:
            raise ValueError(f"size must be positive, got {width}×{height}")
        self.height, self.width, self.resample, self.binary = int(height), int(width), resample, binary

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_image(img, (self.width, self.height), self.resample)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return resize_mask(mask, (self.width, self.height), binary=self.binary)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "resample", "binary")


class LongestSideResize(PairResize):
    """Scale so that the longest side is ``max_size`` (aspect kept, the short side rounded)."""

    def __init__(self, max_size: int, *, resample: str = "lanczos", binary: bool = True,
                 p: float = 1.0) -> None:
        super().__init__(max_size, max_size, resample=resample, binary=binary, p=p)
        self.max_size = int(max_size)

    def _target(self, shape: tuple[int, ...]) -> tuple[int, int]:
        h, w = shape[:2]
        scale = self.max_size / max(h, w)
        return max(1, round(w * scale)), max(1, round(h * scale))

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_image(img, self._target(img.shape), self.resample)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return resize_mask(mask, self._target(mask.shape), binary=self.binary)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_size", "resample", "binary")
