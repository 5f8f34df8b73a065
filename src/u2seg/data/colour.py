"""Colour jitter, one recipe with two implementations that give the same pixels: per image in
numpy (:class:`ColourJitter`, an albumentations step of ``official_train``) and per batch in
torch (:func:`jitter_torch`, on the training device, :mod:`.batch_augment`).

Factors: brightness ``b``, contrast ``c``, saturation ``s``, each uniform in ``1 ± value``, drawn
in that order. On pixels ``x`` in 0 … 255: ``x·b``; then ``(x − m)·c + m`` around the image's mean
luma ``m``; then ``g + (x − g)·s`` around each pixel's luma ``g``; rounded, clipped to 0 … 255.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np
import torch

__all__ = ["LUMA", "ColourJitter", "JitterSpec", "jitter_factors", "jitter_numpy", "jitter_torch"]

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as Pillow's convert("L")


@dataclass(frozen=True)
class JitterSpec:
    """Colour jitter: factors drawn uniformly within ``1 ± brightness`` (scale), ``1 ± contrast``
    (around the image's mean luma) and ``1 ± saturation`` (around each pixel's luma), with
    probability ``p``."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    p: float = 1.0


def jitter_factors(rng: random.Random, spec: JitterSpec) -> tuple[float, float, float]:
    """The brightness, contrast and saturation factors, in that order (shared with the per-sample
    transform, so that both paths draw alike)."""
    b, c, s = (rng.uniform(1 - m, 1 + m) for m in (spec.brightness, spec.contrast, spec.saturation))
    return b, c, s


class ColourJitter(A.ImageOnlyTransform):
    """Colour jitter as an albumentations step (the per-sample path): :class:`JitterSpec`'s
    factors drawn from the pipeline's generator, applied by :func:`jitter_numpy`."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        for label, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{label} must be within [0, 1), got {value}")
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.spec = JitterSpec(self.brightness, self.contrast, self.saturation, p)

    def get_params(self) -> dict[str, Any]:
        return {"factors": jitter_factors(self.py_random, self.spec)}

    def apply(self, img: np.ndarray, factors: tuple[float, float, float] = (1.0, 1.0, 1.0),
              **params: Any) -> np.ndarray:
        return jitter_numpy(img, factors)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness", "contrast", "saturation")


def jitter_numpy(image: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
    """Colour jitter of one ``uint8 H×W×3`` image (the per-sample path), the same arithmetic as
    :func:`jitter_torch`."""
    b, c, s = (np.float32(f) for f in factors)
    luma = np.asarray(LUMA, np.float32)
    y = image.astype(np.float32) * b
    mean = np.float32((y @ luma).astype(np.float64).mean())
    y = (y - mean) * c + mean
    grey = (y @ luma)[..., None]
    return np.clip(np.rint(grey + (y - grey) * s), 0, 255).astype(np.uint8)


def jitter_torch(x: torch.Tensor, factors: list[tuple[float, float, float] | None]) -> torch.Tensor:
    """Colour jitter of a batch, ``float32 N×H×W×3`` pixels in 0 … 255, with one sample's
    factors each (None: that sample passes unchanged); per sample as :func:`jitter_numpy`."""
    applied = torch.tensor([f is not None for f in factors], device=x.device)[:, None, None, None]
    values = torch.tensor([f or (1.0, 1.0, 1.0) for f in factors], dtype=torch.float32, device=x.device)
    luma = torch.tensor(LUMA, dtype=torch.float32, device=x.device)
    b, c, s = (values[:, i, None, None, None] for i in range(3))
    y = x * b
    mean = (y @ luma).double().mean(dim=(1, 2)).float()[:, None, None, None]
    y = (y - mean) * c + mean
    grey = (y @ luma)[..., None]
    y = (grey + (y - grey) * s).round().clamp(0, 255)
    return torch.where(applied, y, x)
