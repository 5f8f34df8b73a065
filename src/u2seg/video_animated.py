"""Animated GIF and WebP through Pillow, for :class:`~u2seg.video_write.VideoWriter`: palette
frames with 1-bit transparency and the GIF file (Pillow, unlike FFmpeg's GIF encoder, has the
"restore to background" disposal that transparent frames need), and libwebp's incremental
animated-WebP encoder (exact per-frame durations, the last one included)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["gif_frame", "pillow_webp_encoder", "save_gif"]


def pillow_webp_encoder(width: int, height: int, loop: int | None) -> Any:
    """Pillow's (≥ 11) incremental animated-WebP encoder, or None where it differs (then FFmpeg's
    libwebp_anim writes the file: the same frames, the last one shown for the average duration)."""
    try:
        from PIL import Image, _webp

        encoder = _webp.WebPAnimEncoder((width, height), 0, int(loop or 0), False, 0, 17, False, False)
        probe = _webp.WebPAnimEncoder((2, 2), 0, 0, False, 0, 17, False, False)
        probe.add(Image.new("RGBA", (2, 2)).getim(), 0, True, 50, 100, 0)
        return encoder
    except Exception:  # an older or newer Pillow: another signature
        return None


def gif_frame(pixels: np.ndarray, ms: int) -> Any:
    """A palette frame for Pillow's GIF writer: 255 colours by median cut, index 255 transparent
    where alpha < 128 (GIF has 1-bit transparency); ``ms`` its delay."""
    from PIL import Image

    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    rgb = Image.fromarray(np.ascontiguousarray(pixels[..., :3]))
    quantised = rgb.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if pixels.shape[2] == 4:
        indices = np.array(quantised, dtype=np.uint8)
        indices[pixels[..., 3] < 128] = 255
        palette = quantised.getpalette()[: 255 * 3]
        quantised = Image.fromarray(indices, mode="P")
        quantised.putpalette(palette + [0, 0, 0] * (256 - len(palette) // 3))
        quantised.info["transparency"] = 255
    quantised.info["duration"] = max(10, int(ms))
    return quantised


def save_gif(frames: list[Any], path: Path, *, alpha: bool, loop: int | None) -> None:
    """Write ``frames`` (from :func:`gif_frame`) as one GIF file at ``path``, synced to disk;
    ``alpha``: each frame is cleared to the background before the next (transparent frames)."""
    first, rest = frames[0], frames[1:]
    options: dict[str, Any] = {"save_all": True, "append_images": rest, "optimize": False,
                               "disposal": 2 if alpha else 1}
    if loop is not None:
        options["loop"] = int(loop)
    with open(path, "wb") as f:
        first.save(f, format="GIF", **options)
        f.flush()
        os.fsync(f.fileno())
