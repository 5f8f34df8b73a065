"""Synthetic salient-object data with exact masks: for tests, smoke runs and examples.

Each sample is one to three objects (ellipses, polygons, stars, smooth blobs) filled with a
texture (flat colour with noise, gradient, stripes, checks) and pasted onto a background: a random
crop of a photo that scikit-image ships (rotated, scaled, flipped, colour-tinted) or a synthetic
texture. Objects are drawn without anti-aliasing, so the mask is exactly the set of pixels that
came from an object (before JPEG compression of the image).

``make_synthetic_dataset(..., fine=True)`` writes high-resolution composites with fine structure
instead (:func:`~u2seg.data.synth_fine.fine_sample`: hair strands, holes, feathered and wispy
edges, and their exact fractional alpha), for measuring edges (``benchmarks/edges.py``).

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
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from ..image_encode import save_image
from .synth_common import PHOTOS, SynthSample, _photo_background, _photos, _texture
from .synth_fine import FINE_ASPECT, fine_sample

__all__ = ["FINE_ASPECT", "PHOTOS", "SHAPES", "SynthSample", "class_names", "fine_sample", "make_synthetic_dataset",
           "synth_sample"]  # FINE_ASPECT, fine_sample: from .synth_fine; PHOTOS, SynthSample: from .synth_common

SHAPES = ("ellipse", "polygon", "star", "blob")
_PHOTO_FRACTION = 0.65  # the rest of the backgrounds are synthetic textures
_FILE_PATTERN = re.compile(r"^\d{5,}\.(jpg|png)$")


def class_names(num_classes: int) -> list[str]:
    """Multi-class mode's classes: ``["background", "ellipse", ...]`` (``num_classes`` of them)."""
    _check_classes(num_classes)
    return ["background", *SHAPES[: num_classes - 1]]


def _check_classes(num_classes: int) -> None:
    if not 2 <= int(num_classes) <= len(SHAPES) + 1:
        raise ValueError(f"num_classes must be 2..{len(SHAPES) + 1} (background + one class per shape "
                         f"type: {', '.join(SHAPES)}), got {num_classes}")


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
                           overwrite: bool = False, fine: bool = False) -> Path:
    """Write ``count`` synthetic samples to ``out_dir/images/*.jpg`` and ``out_dir/masks/*.png``.

    Args:
        count: number of samples (names ``00000`` … zero-padded to at least five digits).
        size: side of the square images in pixels (with ``fine``: the width; see below).
        seed: the same seed gives the same files, byte for byte (with the same Pillow/OpenCV).
        multiclass: masks hold class indices (0 background, 1..``num_classes``-1 one per shape
            type, see :func:`class_names`) for ``FolderPairs``/``FileList`` with ``num_classes``;
            otherwise masks are 0/255 (every object is foreground).
        num_classes: classes in multi-class mode, 2..5.
        overwrite: replace an earlier run's files (``NNNNN.jpg``/``.png``) in ``images/`` and
            ``masks/``; otherwise folders that already hold files stop the run.
        fine: high-resolution composites with fine structure instead (:func:`fine_sample`:
            ``size`` × ``size·3/4``, hair, holes, soft edges): masks are the exact 8-bit alpha
            (0…255) and images are PNG (``NNNNN.png``), lossless, so ``image = α·F + (1 − α)·B``
            holds in the files too; for edge benchmarks (``size`` 2048 ≈ 3 Mpx, 2304 ≈ 4 Mpx).

    Returns:
        ``out_dir`` as a Path; ``FolderPairs(out_dir)`` reads it.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if fine and multiclass:
        raise ValueError("fine composites have one object: alpha masks, not class indices (drop multiclass)")
    if fine and size < 64:
        raise ValueError(f"size must be at least 64 for fine structure, got {size}")
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
        name = f"{index:0{width}d}"
        if fine:
            sample = fine_sample(index, size=size, seed=seed)
            save_image(Image.fromarray(sample.image), images_dir / f"{name}.png", compression=1)
        else:
            sample = synth_sample(index, size=size, seed=seed, multiclass=multiclass, num_classes=num_classes)
            write_bytes_atomic(_jpeg(sample.image), images_dir / f"{name}.jpg")
        save_image(Image.fromarray(sample.mask), masks_dir / f"{name}.png")
    info = {
        "generator": "u2seg.data.synth", "count": count, "size": size, "seed": seed,
        "multiclass": multiclass, "num_classes": num_classes if multiclass else 1,
        "classes": class_names(num_classes) if multiclass else ["background", "foreground"],
        "mask_values": "class indices" if multiclass else "0 background, 255 foreground",
    }
    if fine:
        info.update(fine=True, width=size, height=sample.image.shape[0],
                    mask_values="alpha 0..255 (exact: image = alpha*F + (1 - alpha)*B)")
    write_bytes_atomic((json.dumps(info, indent=2) + "\n").encode("utf-8"), out / "dataset.json")
    return out
