"""Synthetic video clips with exact per-frame masks: for video tests and benchmarks, no download.

Each clip is one object (an ellipse, polygon, star or smooth blob filled with a texture, as in
:mod:`u2seg.data.synth`) moving over a photographic background (a rotated, scaled, tinted crop
of a scikit-image photo, or a texture): it holds still, then moves along a curved path while it
turns and grows or shrinks, partly leaving the frame in some clips, then holds still again; the
camera may pan slowly. The object is drawn without anti-aliasing, so the mask is exactly the set
of pixels that came from the object. Every frame gets its own sensor noise and a slight
exposure wobble, as a real camera's frames do (what makes per-frame masks flicker).

``synth_clip(i, width=, height=, frames=)`` yields ``(frame, mask)`` pairs one at a time (a
1080p clip never sits in memory); ``make_synthetic_videos(out, count=, frames=)`` writes
``out/clips/00000.mp4`` (H.264, near-lossless) and ``out/masks/00000/000001.png`` … plus
``out/dataset.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import U2SegError
from ..fileio import write_bytes_atomic
from ..image_encode import encode_image
from .synth import SHAPES, _shape_mask
from .synth_common import _photo_background, _photos, _texture

__all__ = ["ClipPlan", "clip_plan", "synth_clip", "make_synthetic_videos"]


@dataclass(frozen=True)
class ClipPlan:
    """What clip ``index`` shows (drawn from ``(seed, index)`` only)."""

    shape: str
    leaves_frame: bool
    pans: bool
    turns: float        # radians over the move
    grows: float        # scale at the end of the move (1 at its start)


def _ease(t: float) -> float:
    """Hold for the first quarter, move (smoothly) for the middle half, hold for the last quarter."""
    u = min(1.0, max(0.0, (t - 0.25) / 0.5))
    return u * u * (3.0 - 2.0 * u)


def clip_plan(index: int, seed: int = 0) -> ClipPlan:
    rng = np.random.default_rng([int(seed), int(index), 7])
    return ClipPlan(SHAPES[int(rng.integers(len(SHAPES)))], bool(rng.random() < 0.35), bool(rng.random() < 0.4),
                    float(rng.uniform(-1.2, 1.2)), float(rng.uniform(0.7, 1.4)))


def synth_clip(index: int, *, width: int = 320, height: int = 240, frames: int = 24, seed: int = 0,
               noise: float = 3.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Clip ``index``'s frames: ``(uint8 H×W×3 frame, uint8 H×W mask 0/255)``, one at a time."""
    if width < 16 or height < 16:
        raise ValueError(f"clips are at least 16×16, got {width}×{height}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    plan = clip_plan(index, seed)
    rng = np.random.default_rng([int(seed), int(index), width, height])
    side = int(max(width, height) * 1.25)
    photos = _photos()
    if photos and rng.random() < 0.8:
        canvas = _photo_background(rng, side, photos[int(rng.integers(len(photos)))])
    else:
        canvas = _texture(rng, side)
    canvas = np.clip(canvas, 0, 255).astype(np.float32)
    # The object: a sprite (texture + exact mask) on a square of its own.
    sprite_side = max(16, int(min(width, height) * rng.uniform(0.45, 0.6)))
    region = np.zeros((sprite_side, sprite_side), bool)
    while region.sum() < sprite_side * sprite_side // 10:
        region = _shape_mask(rng, sprite_side, plan.shape)
    texture = np.clip(_texture(rng, sprite_side), 0, 255).astype(np.uint8)
    rows, cols = np.nonzero(region)
    centre = np.array([(cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2])
    # Its path: start and end points (the end partly out of the frame for some clips) and a bow.
    start = np.array([rng.uniform(0.3, 0.45) * width, rng.uniform(0.35, 0.65) * height])
    if plan.leaves_frame:
        end = np.array([width * rng.uniform(0.95, 1.05), rng.uniform(0.3, 0.7) * height])
    else:
        end = np.array([rng.uniform(0.55, 0.7) * width, rng.uniform(0.35, 0.65) * height])
    bow = rng.uniform(-0.15, 0.15) * height
    pan = rng.uniform(-0.1, 0.1, 2) * np.array([width, height]) if plan.pans else np.zeros(2)
    exposure = rng.uniform(0.01, 0.03)
    for f in range(frames):
        t = f / max(1, frames - 1)
        e = _ease(t)
        offset = (side - np.array([width, height])) / 2 + pan * e
        x0, y0 = int(round(offset[0])), int(round(offset[1]))
        background = canvas[y0:y0 + height, x0:x0 + width]
        position = start + (end - start) * e + np.array([0.0, bow * np.sin(np.pi * e)])
        angle = np.degrees(plan.turns * e)
        scale = 1.0 + (plan.grows - 1.0) * e
        matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), float(scale))
        matrix[:, 2] += position - centre
        mask = cv2.warpAffine(region.astype(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST,
                              borderValue=0).astype(bool)
        colours = cv2.warpAffine(texture, matrix, (width, height), flags=cv2.INTER_NEAREST)
        frame = background.copy()
        frame[mask] = colours[mask]
        wobble = 1.0 + exposure * np.sin(2.3 * f + index)
        frame = frame * wobble + rng.normal(0.0, noise, frame.shape).astype(np.float32)
        yield np.rint(np.clip(frame, 0, 255)).astype(np.uint8), mask.astype(np.uint8) * 255


def make_synthetic_videos(out_dir: str | os.PathLike, *, count: int = 4, frames: int = 48, width: int = 320,
                          height: int = 240, fps: int = 25, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``count`` clips: ``out/clips/NNNNN.mp4`` (H.264, CRF 12) and their exact masks
    ``out/masks/NNNNN/000001.png`` …; returns ``out``."""
    from ..video_write import VideoWriter

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = Path(out_dir)
    clips, masks = out / "clips", out / "masks"
    if clips.is_dir() and any(clips.iterdir()) and not overwrite:
        raise U2SegError(f"{clips}: folder is not empty; pass --overwrite or choose another folder")
    digits = max(5, len(str(count - 1)))
    for index in range(count):
        name = f"{index:0{digits}d}"
        with VideoWriter(clips / f"{name}.mp4", "mp4", width=width, height=height, mode="RGB",
                         time_base=Fraction(1, fps), rate=Fraction(fps), crf=12) as writer:
            for f, (frame, mask) in enumerate(synth_clip(index, width=width, height=height, frames=frames, seed=seed)):
                writer.write(frame, f, 1)
                write_bytes_atomic(encode_image(Image.fromarray(mask), "png"), masks / name / f"{f + 1:06d}.png")
    info = {"generator": "u2seg.data.synth_video", "count": count, "frames": frames, "width": width,
            "height": height, "fps": fps, "seed": seed, "clips": "clips/NNNNN.mp4 (H.264, CRF 12)",
            "masks": "masks/NNNNN/000001.png … (0 background, 255 object; exact)"}
    write_bytes_atomic((json.dumps(info, indent=2) + "\n").encode("utf-8"), out / "dataset.json")
    return out
