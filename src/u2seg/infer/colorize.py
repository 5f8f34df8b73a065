"""Pictures of segmentations: pseudo-colour class maps, overlays and side-by-side sheets.

Class maps are saved as palette PNGs (mode ``P``) with the Pascal VOC colours, as VOC and
PaddleSeg do: the pixel values stay the class indices (any tool, and ``u2seg eval --pred-dir``,
reads them back as classes) while viewers show colours. Index 255 (ignore) is VOC's cream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["IGNORE_COLOUR", "colorize", "gray", "label_colours", "overlay", "side_by_side", "voc_palette"]

IGNORE_COLOUR = (224, 224, 192)  # VOC's colour for index 255 (object borders, "ignore")


def voc_palette(n: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: ``uint8 n×3``, class ``k``'s colour from the bits of ``k``
    (0 black, 1 dark red, 2 green, …); index 255 is VOC's ignore colour."""
    k = np.arange(n)
    palette = np.zeros((n, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            palette[:, channel] |= ((k >> (3 * shift + channel)) & 1) << (7 - shift)
    if n > 255:
        palette[255] = IGNORE_COLOUR
    return palette.astype(np.uint8)


_PALETTE = voc_palette()


def label_colours(labels: np.ndarray) -> np.ndarray:
    """Class indices ``H×W`` (0…255) → ``uint8 H×W×3`` VOC colours."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"class indices must lie in 0…255, got {labels.min()}…{labels.max()}")
    return _PALETTE[labels.astype(np.uint8)]


def colorize(labels: np.ndarray) -> Image.Image:
    """Class indices ``H×W`` → a palette image (mode ``P``) whose pixel values are the indices."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a class map is H×W, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"class indices must lie in 0…255, got {labels.min()}…{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE.ravel().tolist())
    return image


def gray(values: np.ndarray) -> np.ndarray:
    """A map in [0, 1] (or uint8) ``H×W`` → ``uint8 H×W×3`` gray picture."""
    values = np.asarray(values)
    if values.dtype != np.uint8:
        values = (np.clip(values.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(values[..., None], 3, axis=2)


def overlay(image: np.ndarray | Image.Image, labels: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The image with each non-background class (index ≠ 0, ≠ 255) tinted in its colour.

    ``image``: ``uint8 H×W×3`` (or a PIL image); ``labels``: class indices of the same size."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    picture = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    labels = np.asarray(labels)
    if picture.shape[:2] != labels.shape:
        raise ValueError(f"image is {picture.shape[1]}×{picture.shape[0]} but the class map is "
                         f"{labels.shape[1]}×{labels.shape[0]}")
    out = picture.astype(np.float32)
    tinted = (labels != 0) & (labels != 255)
    colours = label_colours(labels).astype(np.float32)
    out[tinted] = (1 - alpha) * out[tinted] + alpha * colours[tinted]
    return (out + 0.5).astype(np.uint8)


def side_by_side(panels: Sequence[np.ndarray], *, gap: int = 4, height: int | None = None) -> np.ndarray:
    """``uint8 H×W×3`` panels (image | label | prediction …) in a row, each scaled to one height
    (the first panel's, or ``height``; labels with nearest-neighbour so classes stay crisp)."""
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    h = height or panels[0].shape[0]
    scaled = []
    for panel in panels:
        panel = np.asarray(panel)
        if panel.ndim == 2:
            panel = np.repeat(panel[..., None], 3, axis=2)
        if panel.shape[0] != h:
            w = max(1, round(panel.shape[1] * h / panel.shape[0]))
            panel = np.asarray(Image.fromarray(panel).resize((w, h), Image.Resampling.NEAREST))
        scaled.append(panel)
    white = np.full((h, gap, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for i, panel in enumerate(scaled):
        row += ([white] if i and gap else []) + [panel]
    return np.concatenate(row, axis=1)
