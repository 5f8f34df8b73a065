"""The pre-processing recipe: how an image becomes the network's input.

Owned here, below every layer that needs it: the Predictor runs it, int8 calibration
(``u2seg.export``) pre-processes its images with it, and the weights' ``config.json`` records its
values (input size, mean, std) beside the tensors, as timm keeps a pretrained config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from .resize import RESAMPLE_METHODS, resize_rgb

__all__ = ["Preprocessing", "InputNorm"]

InputNorm = Literal["max", "unit"]


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network's input. ``input_norm``: ``max`` divides by the image's
    maximum (official, rembg); ``unit`` divides by 255."""

    size: tuple[int, int] = (320, 320)  # (width, height)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_norm: InputNorm = "max"
    resample: str = "lanczos"

    def __post_init__(self) -> None:
        if self.input_norm not in ("max", "unit"):
            raise ValueError(f"input_norm must be 'max' or 'unit', not {self.input_norm!r}")
        if self.resample not in RESAMPLE_METHODS:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLE_METHODS)}, not {self.resample!r}")
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {self.size}")

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image → float32 ``3×H×W``."""
        x = resize_rgb(image, self.size, self.resample).astype(np.float32)
        scale = float(x.max()) if self.input_norm == "max" else 255.0
        if scale > 0:  # an all-black image stays zero instead of becoming NaN
            x /= scale
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return x.transpose(2, 0, 1)
