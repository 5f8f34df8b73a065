"""Synthetic salient-object data with exact masks: for tests, smoke runs and examples.

Each sample is one to three objects (ellipses, polygons, stars, smooth blobs) filled with a
texture (flat colour with noise, gradient, stripes, checks) and pasted onto a background: a random
crop of a photo that scikit-image ships (rotated, scaled, flipped, colour-tinted) or a synthetic
texture. Objects are drawn without anti-aliasing, so the mask is exactly the set of pixels that
came from an object (before JPEG compression of the image).

``make_synthetic_dataset(out, count=200)`` writes ``out/images/00000.jpg`` (JPEG quality 95) and
``out/masks/00000.png`` (0/255, or class indices in multi-class mode: 0 background, 1..K-1 one
class per shape type, in :data:`SHAPES` order) plus ``out/dataset.json`` describing the run. The
output is a function of the arguments only: sample ``i`` depends on ``(seed, i, size, mode)``, not
on ``count``. Photos need scikit-image; without it every background is a synthetic texture
(different images, still deterministic). No torch needed.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from ..image_io import save_image

__all__ = ["PHOTOS", "SHAPES", "SynthSample", "class_names", "make_synthetic_dataset", "synth_sample"]

SHAPES = ("ellipse", "polygon", "star", "blob")
#: scikit-image sample photos used as backgrounds (all ship inside the scikit-image wheel).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "brick",
          "grass", "gravel", "immunohistochemistry")
_PHOTO_FRACTION = 0.65  # the rest of the backgrounds are synthetic textures
_FILE_PATTERN = re.compile(r"^\d{5,}\.(jpg|png)$")


@dataclass(frozen=True)
class SynthSample:
    """One generated sample: ``image`` ``uint8 H×W×3``; ``mask`` ``uint8 H×W`` (0/255, or class
    indices in multi-class mode); ``background`` the image before objects were pasted;
    ``shapes`` the objects' shape types, bottom to top."""

    image: np.ndarray
    mask: np.ndarray
    background: np.ndarray
    shapes: tuple[str, ...]


def class_names(num_classes: int) -> list[str]:
    """Multi-class mode's classes: ``["background", "ellipse", ...]`` (``num_classes`` of them)."""
    _check_classes(num_classes)
    return ["background", *SHAPES[: num_classes - 1]]


def _check_classes(num_classes: int) -> None:
    if not 2 <= int(num_classes) <= len(SHAPES) + 1:
        raise ValueError(f"num_classes must be 2..{len(SHAPES) + 1} (background + one class per shape "
                         f"type: {', '.join(SHAPES)}), got {num_classes}")


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


# --------------------------------------------------------------------------- shapes


def _shape_mask(rng: np.random.Generator, size: int, shape: str) -> np.ndarray:
    """A ``bool size×size`` object of the given type, drawn without anti-aliasing."""
    canvas = np.zeros((size, size), np.uint8)
    radius = rng.uniform(0.12, 0.32) * size
    margin = radius * 0.6  # objects may touch the border, but mostly stay inside
    cx, cy = rng.uniform(margin, size - margin, 2)
    if shape == "ellipse":
        axes = (max(2, round(radius)), max(2, round(radius * rng.uniform(0.4, 1.0))))
        cv2.ellipse(canvas, (round(cx), round(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1,
                    lineType=cv2.LINE_8)
        return canvas.astype(bool)
    if shape == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.6, 1.0, n)
    elif shape == "star":
        n = int(rng.integers(5, 9))
        angles = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, 2 * np.pi)
        radii = np.where(np.arange(2 * n) % 2 == 0, radius, radius * rng.uniform(0.35, 0.6))
    elif shape == "blob":
        angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        radii = np.full(angles.shape, radius)
        for k in range(2, 6):
            radii += radius * rng.uniform(0, 0.25 / k * 2) * np.sin(k * angles + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


# --------------------------------------------------------------------------- samples


def synth_sample(index: int, *, size: int = 256, seed: int = 0, multiclass: bool = False,
                 num_classes: int = 3) -> SynthSample:
    """Sample ``index`` of the synthetic dataset for ``seed`` (what :func:`make_synthetic_dataset`
    writes, before JPEG compression)."""
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    if multiclass:
        _check_classes(num_classes)
    rng = np.random.default_rng([int(seed), int(index), int(size), int(multiclass) * int(num_classes)])
    photos = _photos()
    if photos and rng.random() < _PHOTO_FRACTION:
        background = _photo_background(rng, size, photos[int(rng.integers(len(photos)))])
    else:
        background = _texture(rng, size)
    background_u8 = np.rint(background.clip(0, 255)).astype(np.uint8)
    image = background_u8.copy()
    mask = np.zeros((size, size), np.uint8)
    kinds = SHAPES[: num_classes - 1] if multiclass else SHAPES
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15] if multiclass else [0.7, 0.25, 0.05]))
    drawn: list[str] = []
    while len(drawn) < count:
        kind_index = int(rng.integers(len(kinds)))
        region = _shape_mask(rng, size, kinds[kind_index])
        if region.sum() < max(16, size * size // 400):  # too small to see: draw another
            continue
        rows, cols = np.nonzero(region)
        box = (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
        texture = np.rint(_texture(rng, size, box).clip(0, 255)).astype(np.uint8)
        inside = region[box[0]:box[1], box[2]:box[3]]
        image[box[0]:box[1], box[2]:box[3]][inside] = texture[inside]
        mask[region] = kind_index + 1 if multiclass else 255
        drawn.append(kinds[kind_index])
    return SynthSample(image, mask, background_u8, tuple(drawn))


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def make_synthetic_dataset(out_dir: str | os.PathLike, *, count: int, size: int = 256, seed: int = 0,
                           multiclass: bool = False, num_classes: int = 3,
                           overwrite: bool = False) -> Path:
    """Write ``count`` synthetic samples to ``out_dir/images/*.jpg`` and ``out_dir/masks/*.png``.

    Args:
        count: number of samples (names ``00000`` … zero-padded to at least five digits).
        size: side of the square images in pixels.
        seed: the same seed gives the same files, byte for byte (with the same Pillow/OpenCV).
        multiclass: masks hold class indices (0 background, 1..``num_classes``-1 one per shape
            type, see :func:`class_names`) for ``FolderPairs``/``FileList`` with ``num_classes``;
            otherwise masks are 0/255 (every object is foreground).
        num_classes: classes in multi-class mode, 2..5.
        overwrite: replace an earlier run's files (``NNNNN.jpg``/``.png``) in ``images/`` and
            ``masks/``; otherwise folders that already hold files stop the run.

    Returns:
        ``out_dir`` as a Path; ``FolderPairs(out_dir)`` reads it.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if multiclass:
        _check_classes(num_classes)
    out = Path(out_dir)
    images_dir, masks_dir = out / "images", out / "masks"
    for folder in (images_dir, masks_dir):
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise U2SegError(f"{folder}: folder is not empty; pass overwrite=True or choose another folder")
            for old in folder.iterdir():
                if old.is_file() and _FILE_PATTERN.match(old.name):
                    old.unlink()
    width = max(5, len(str(count - 1)))
    for index in range(count):
        sample = synth_sample(index, size=size, seed=seed, multiclass=multiclass, num_classes=num_classes)
        name = f"{index:0{width}d}"
        write_bytes_atomic(_jpeg(sample.image), images_dir / f"{name}.jpg")
        save_image(Image.fromarray(sample.mask), masks_dir / f"{name}.png")
    info = {
        "generator": "u2seg.data.synth", "count": count, "size": size, "seed": seed,
        "multiclass": multiclass, "num_classes": num_classes if multiclass else 1,
        "classes": class_names(num_classes) if multiclass else ["background", "foreground"],
        "mask_values": "class indices" if multiclass else "0 background, 255 foreground",
    }
    write_bytes_atomic((json.dumps(info, indent=2) + "\n").encode("utf-8"), out / "dataset.json")
    return out
