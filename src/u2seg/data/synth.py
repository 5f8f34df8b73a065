"""Synthetic salient-object data with exact masks: for tests, smoke runs and examples.

Each sample is one to three objects (ellipses, polygons, stars, smooth blobs) filled with a
texture (flat colour with noise, gradient, stripes, checks) and pasted onto a background: a random
crop of a photo that scikit-image ships (rotated, scaled, flipped, colour-tinted) or a synthetic
texture. Objects are drawn without anti-aliasing, so the mask is exactly the set of pixels that
came from an object (before JPEG compression of the image).

``fine_sample`` / ``make_synthetic_dataset(..., fine=True)`` make high-resolution composites with
fine structure instead (hair strands 1–3 px wide, holes, feathered and wispy edges over photo-like
backgrounds) and their exact fractional alpha, for measuring edges (``benchmarks/edges.py``).

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
from ..image_encode import save_image

__all__ = ["FINE_ASPECT", "PHOTOS", "SHAPES", "SynthSample", "class_names", "fine_sample", "make_synthetic_dataset",
           "synth_sample"]

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


# --------------------------------------------------------------------------- fine structure


#: Width : height of :func:`fine_sample`'s images (landscape, as most photos).
FINE_ASPECT = (4, 3)


def _fractal(rng: np.random.Generator, width: int, height: int, feature: float, octaves: int) -> np.ndarray:
    """Value noise with detail down to about ``feature / 2**(octaves-1)`` pixels, float32 ``H×W``
    in about [-1, 1] (each octave half the size and ~0.6 of the amplitude of the last)."""
    total = np.zeros((height, width), np.float32)
    amplitude, norm = 1.0, 0.0
    for _ in range(octaves):
        cells = (max(2, round(width / feature)) + 1, max(2, round(height / feature)) + 1)
        coarse = rng.uniform(-1, 1, (cells[1], cells[0])).astype(np.float32)
        total += amplitude * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        norm += amplitude
        amplitude *= 0.6
        feature = max(1.5, feature / 2)
    return total / norm


def _photo_like(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A ``float32 H×W×3`` picture with detail at every scale: a rotated, scaled, tinted crop of a
    scikit-image photo (or a synthetic texture), plus colour-correlated fractal detail down to a
    few pixels and grain, as a photo taken at this resolution would have."""
    photos = _photos()
    side = max(width, height)
    if photos and rng.random() < 0.75:
        base = _photo_background(rng, side, photos[int(rng.integers(len(photos)))])
    else:
        base = _texture(rng, side)
    top, left = (side - height) // 2, (side - width) // 2
    base = np.ascontiguousarray(base[top:top + height, left:left + width])
    detail = _fractal(rng, width, height, feature=rng.uniform(0.03, 0.12) * side, octaves=6)
    tint = rng.uniform(0.6, 1.4, 3).astype(np.float32)
    base += rng.uniform(15, 40) * detail[..., None] * tint
    base += rng.normal(0, rng.uniform(1, 4), (height, width, 1)).astype(np.float32)  # sensor grain
    return base


def _wide_blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; a wide one runs on a reduced copy (it only keeps low frequencies anyway),
    which is ~50× faster than a 700-pixel kernel at full size."""
    factor = max(1, int(sigma / 4))
    if factor == 1:
        return cv2.GaussianBlur(values, (0, 0), sigma)
    h, w = values.shape[:2]
    small = cv2.resize(values, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _aa_fill(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (float32 in [0, 1]) of a polygon with sub-pixel vertices."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _blob_outline(rng: np.random.Generator, cx: float, cy: float, radius: float, aspect: float,
                  angle: float) -> np.ndarray:
    """Points of a smooth closed blob (sum of low harmonics of the radius)."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    r = np.full(t.shape, radius)
    for k in range(2, 7):
        r += radius * rng.uniform(0, 0.3 / k) * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    x, y = r * np.cos(t), aspect * r * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _sector(angles: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A smooth window in [0, 1] over ``angles``: 1 within ``width/2`` of ``centre``, easing to 0
    over as much again."""
    d = np.abs((angles - centre + np.pi) % (2 * np.pi) - np.pi)
    return np.clip((width - d) / (width / 2), 0.0, 1.0)


def _strands(rng: np.random.Generator, shape: tuple[int, int], body: np.ndarray, centre: tuple[float, float],
             count: int, sector: tuple[float, float]) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
    """Hair: curved strands 1–3 px wide rooted in the body's outline within the angular
    ``sector`` (centre, width) and growing outwards. Returns the strands' anti-aliased coverage
    (float32) and the polylines with their thickness (for colouring)."""
    contours, _ = cv2.findContours((body >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros(shape, np.float32), []
    outline = max(contours, key=len)[:, 0, :].astype(np.float64)
    cx, cy = centre
    angles = np.arctan2(outline[:, 1] - cy, outline[:, 0] - cx)
    weight = _sector(angles, *sector)
    if weight.sum() <= 0:
        return np.zeros(shape, np.float32), []
    starts = outline[rng.choice(len(outline), size=count, p=weight / weight.sum())]
    canvas = np.zeros(shape, np.uint8)
    long_side = max(shape)
    lines = []
    for x, y in starts:
        heading = np.arctan2(y - cy, x - cx) + rng.normal(0, 0.35)
        length = rng.uniform(0.02, 0.10) * long_side
        step = 3.0
        n = max(3, int(length / step))
        curl = rng.choice([0.004, 0.01, 0.025])  # straight, wavy or curly
        turn = rng.normal(0, 0.02) + np.cumsum(rng.normal(0, curl, n))  # slowly varying curvature
        headings = heading + np.cumsum(turn)
        root = np.array([x, y]) - np.array([np.cos(heading), np.sin(heading)]) * rng.uniform(4, 12)
        steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * step
        points = np.vstack([root, root + np.cumsum(steps, axis=0)])
        thickness = int(rng.choice([1, 1, 1, 2, 2, 3]))
        fixed = np.round(points * 16).astype(np.int32)
        cv2.polylines(canvas, [fixed], False, 255, thickness=thickness, lineType=cv2.LINE_AA, shift=4)
        lines.append((fixed, thickness))
    return canvas.astype(np.float32) / 255.0, lines


def fine_sample(index: int, *, size: int = 2048, seed: int = 0) -> SynthSample:
    """A high-resolution composite with an exact, finely structured alpha matte.

    The image is ``size`` × ``size·3/4`` (landscape); ``mask`` is the 8-bit alpha (0…255) with
    which it was composited, bottom to top: a photo-like background (a scikit-image photo
    scaled up, with fractal detail down to a few pixels and grain), a wisp layer (smoke-like,
    fractional alpha, in one sector around the object), the object (a smooth blob with
    anti-aliased outline, one to three holes, and a feathered stretch of outline), then hair
    (a few hundred curved strands 1–3 px wide, anti-aliased, in one or two tufts). Each layer is
    composited "over" the ones below, and the image is made from the stored 8-bit alpha, so
    ``image = α·F + (1 − α)·B`` holds with ``α = mask / 255`` exactly, up to the uint8 rounding
    of the image (``B`` is ``background``; where the mask is 0 the image is the background).
    ``shapes`` is ``("fine",)``. Deterministic in ``(index, size, seed)``; about 3 s at 4 Mpx.
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 for fine structure, got {size}")
    width, height = int(size), max(16, round(size * FINE_ASPECT[1] / FINE_ASPECT[0]))
    shape = (height, width)
    rng = np.random.default_rng([int(seed), int(index), int(size), 0xF1E])
    background = _photo_like(rng, width, height)
    body_colours = _photo_like(rng, width, height)

    # The object: a blob in the middle third, big enough for the network to call it salient.
    cx, cy = width * rng.uniform(0.38, 0.62), height * rng.uniform(0.4, 0.6)
    radius = height * rng.uniform(0.22, 0.32)
    body = _aa_fill(shape, _blob_outline(rng, cx, cy, radius, rng.uniform(0.7, 1.2), rng.uniform(0, np.pi)))
    # Holes, where the object is thick enough around them.
    inside = cv2.distanceTransform((body >= 1.0).astype(np.uint8), cv2.DIST_L2, 5)
    for _ in range(int(rng.integers(1, 4))):
        hole_r = height * rng.uniform(0.02, 0.06)
        ys, xs = np.nonzero(inside > hole_r * 2.2)
        if ys.size == 0:
            break
        k = int(rng.integers(ys.size))
        hole = _aa_fill(shape, _blob_outline(rng, xs[k], ys[k], hole_r, rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)))
        body *= 1.0 - hole
        inside[hole > 0] = 0

    angles = np.arctan2(np.arange(height, dtype=np.float32)[:, None] - np.float32(cy),
                        np.arange(width, dtype=np.float32)[None, :] - np.float32(cx))
    # A feathered stretch of the outline (motion blur, defocus, fur seen edge-on).
    feather = rng.uniform(0.004, 0.012) * width
    soft = _sector(angles, rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 1.2))
    body += soft * (_wide_blur(body, feather) - body)
    # Wisps: smoke-like fractional alpha around another stretch, under the object.
    wisp_sector = _sector(angles, rng.uniform(-np.pi, np.pi), rng.uniform(0.6, 1.4))
    halo = _wide_blur(body, rng.uniform(0.02, 0.05) * width)
    smoke = np.clip(0.5 + 0.9 * _fractal(rng, width, height, feature=0.05 * width, octaves=5), 0, 1)
    wisps = np.clip(rng.uniform(0.5, 0.9) * wisp_sector * np.clip(halo * 2.5, 0, 1) * smoke, 0, 1)
    # Hair: one or two tufts of strands.
    hair = np.zeros(shape, np.float32)
    lines = []
    for _ in range(int(rng.integers(1, 3))):
        tuft, tuft_lines = _strands(rng, shape, body, (cx, cy), int(rng.integers(120, 300)),
                                    (rng.uniform(-np.pi, np.pi), rng.uniform(0.4, 1.0)))
        hair = 1.0 - (1.0 - hair) * (1.0 - tuft)
        lines += tuft_lines
    del angles, inside, halo, smoke, soft, wisp_sector

    # Colours of the layers: hair one tone with per-strand variation, wisps a pale or dark tint.
    mean_body = body_colours.reshape(-1, 3).mean(axis=0)
    hair_tone = rng.uniform(20, 235, 3) if rng.random() < 0.5 else mean_body * rng.uniform(0.5, 1.3)
    hair_colours = np.empty((height, width, 3), np.float32)
    hair_colours[:] = hair_tone
    for fixed, thickness in lines:
        tone = tuple(float(c) for c in np.clip(hair_tone * rng.uniform(0.8, 1.2) + rng.normal(0, 10, 3), 0, 255))
        cv2.polylines(hair_colours, [fixed], False, tone, thickness=thickness + 2, lineType=cv2.LINE_8, shift=4)
    wisp_colour = np.clip(mean_body + rng.uniform(-60, 60, 3), 0, 255).astype(np.float32)

    # The layers "over" each other give the foreground's premultiplied colour P and alpha; the
    # image is then made from the *8-bit* alpha, so that image = α·F + (1 − α)·B holds for the
    # mask as stored (F = P / alpha, a mixture of the layers' colours; B the 8-bit background).
    background_u8 = np.rint(np.clip(background, 0, 255)).astype(np.uint8)
    premultiplied = np.zeros((height, width, 3), np.float32)
    for alpha, colours in ((wisps, wisp_colour), (body, body_colours), (hair, hair_colours)):
        a = alpha[..., None]
        premultiplied = premultiplied * (1.0 - a) + np.clip(np.asarray(colours, np.float32), 0, 255) * a
    total = 1.0 - (1.0 - wisps) * (1.0 - body) * (1.0 - hair)
    mask = np.rint(np.clip(total, 0, 1) * 255).astype(np.uint8)
    foreground = np.divide(premultiplied, total[..., None], out=np.zeros_like(premultiplied),
                           where=mask[..., None] > 0)
    a = mask[..., None].astype(np.float32) / 255.0
    image = np.rint(np.clip(a * foreground + (1.0 - a) * background_u8, 0, 255)).astype(np.uint8)
    return SynthSample(image, mask, background_u8, ("fine",))


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
