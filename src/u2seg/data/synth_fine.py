"""Fine synthetic samples: high-resolution composites with an exact, finely structured alpha
matte (hair strands 1–3 px wide, holes, feathered and wispy edges over photo-like backgrounds),
for measuring edges (``benchmarks/edges.py``). ``make_synthetic_dataset(..., fine=True)``
(:mod:`u2seg.data.synth`) writes them as files. No torch needed.
"""

from __future__ import annotations

import cv2
import numpy as np

from .synth_common import SynthSample, _photo_background, _photos, _texture

__all__ = ["FINE_ASPECT", "fine_sample"]

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
