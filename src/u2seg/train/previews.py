"""Preview sheets, ``previews/step_N.png``: one row per sample, image | label | prediction."""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..infer.colorize import gray, label_colours, side_by_side

__all__ = ["preview_png", "to_uint8_image"]


def to_uint8_image(image: torch.Tensor, transform: Any) -> np.ndarray:
    """A normalised ``3×H×W`` network input back as ``uint8 H×W×3``: the transform's mean/std
    undone, then stretched to 0 … 255 (the per-image max division cannot be undone)."""
    x = image.numpy().astype(np.float32)
    norm = getattr(transform, "norm", None)
    mean, std = getattr(norm, "mean", None), getattr(norm, "std", None)
    if mean is not None and std is not None:
        x = x * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return (x.transpose(1, 2, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8)


def preview_png(items: Sequence[dict[str, Any]], logits: torch.Tensor, *, binary: bool, transform: Any) -> bytes:
    """The PNG of the sheet for dataset ``items`` and the model's ``logits`` (``N×C×H×W``)."""
    rows = []
    for i, item in enumerate(items):
        picture = to_uint8_image(item["image"], transform)
        if binary:
            label = gray(item["mask"][0].numpy())
            pred = gray(torch.sigmoid(logits[i, 0]).numpy())
        else:
            label = label_colours(item["mask"].numpy())
            pred = label_colours(logits[i].argmax(0).numpy())
        rows.append(side_by_side([picture, label, pred], gap=0))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG")
    return buffer.getvalue()
