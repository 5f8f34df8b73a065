"""What the synthetic generators share (:mod:`~u2seg.data.synth`, :mod:`~u2seg.data.synth_fine`,
:mod:`~u2seg.data.synth_video`): the :class:`SynthSample` record, scikit-image's photos and
random crops of them, and generated textures (flat, gradient, stripes, checks, smooth noise).
No torch needed; without scikit-image there are no photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = ["PHOTOS", "SynthSample"]

#: scikit-image sample photos used as backgrounds (all ship inside the scikit-image wheel).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "brick",
          "grass", "gravel", "immunohistochemistry")


@dataclass(frozen=True)
class SynthSample:
    """One generated sample: ``image`` ``uint8 H×W×3``; ``mask`` ``uint8 H×W`` (0/255, or class
    indices in multi-class mode); ``background`` the image before objects were pasted;
    ``shapes`` the objects' shape types, bottom to top."""

    image: np.ndarray
    mask: np.ndarray
    background: np.ndarray
    shapes: tuple[str, ...]


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    try:
        from skimage import data
    except ImportError:
        return ()
    photos = []
    for name in PHOTOS:
        try:
            pixels = np.asarray(getattr(data, name)())
        except Exception:  # a photo missing from this scikit-image version
            continue
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        photos.append(np.ascontiguousarray(pixels[:, :, :3], dtype=np.uint8))
    return tuple(photos)


# --------------------------------------------------------------------------- textures


Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def _grid(size: int, box: Box) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) / np.float32(size)
    return xs, ys


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Noise in [0, 1] with features about ``size / cells`` pixels wide."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _texture(rng: np.random.Generator, size: int, box: Box | None = None) -> np.ndarray:
    """A ``float32`` texture in 0..255 (flat, gradient, stripes, checks or smooth noise) over
    ``box`` of a ``size×size`` canvas (default: all of it), shape ``h×w×3``."""
    box = box or (0, size, 0, size)
    xs, ys = _grid(size, box)
    a, b = _colour(rng), _colour(rng)
    kind = rng.integers(5)
    if kind == 0:  # flat colour
        t = np.zeros(xs.shape, np.float32)
    elif kind == 1:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xs + np.sin(angle) * ys)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 2:  # stripes
        angle, freq = rng.uniform(0, np.pi), rng.uniform(4, 20)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (np.cos(angle) * xs + np.sin(angle) * ys))
    elif kind == 3:  # checks
        n = rng.integers(3, 12)
        t = ((np.floor(xs * n) + np.floor(ys * n)) % 2).astype(np.float32)
    else:  # smooth noise
        t = _smooth_noise(rng, size, int(rng.integers(3, 10)))[box[0]:box[1], box[2]:box[3]]
    out = a + t[..., None] * (b - a)
    out += rng.normal(0, rng.uniform(0, 12), (*xs.shape, 1)).astype(np.float32)  # grain
    return out


def _photo_background(rng: np.random.Generator, size: int, photo: np.ndarray) -> np.ndarray:
    """A random rotated, scaled, flipped and tinted crop of ``photo``, ``float32 size×size×3``."""
    h, w = photo.shape[:2]
    side = rng.uniform(0.35, 0.95) * min(h, w)  # crop side in source pixels
    angle = rng.uniform(-np.pi, np.pi) if rng.random() < 0.3 else rng.uniform(-0.3, 0.3)
    cx = rng.uniform(side / 2, w - side / 2)
    cy = rng.uniform(side / 2, h - side / 2)
    scale = side / size
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    flip = -1.0 if rng.random() < 0.5 else 1.0
    # destination (u, v) → source (x, y): centred, scaled, rotated, optionally mirrored
    matrix = np.array([[flip * cos, -sin, 0.0], [flip * sin, cos, 0.0]], np.float64)
    matrix[:, 2] = [cx, cy] - matrix[:, :2] @ [size / 2, size / 2]
    crop = cv2.warpAffine(photo, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)
    return crop.astype(np.float32) * tint

