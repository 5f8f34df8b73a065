"""u2seg: U²-Net salient-object segmentation and background removal.

    >>> import u2seg
    >>> cutout = u2seg.remove("photo.jpg")                 # RGBA, pretrained U²-Net-P
    >>> model = u2seg.create_model("u2net", pretrained="u2net.pth")

Heavy modules (torch, onnx) load on first use, so ``import u2seg`` stays fast.
"""

from __future__ import annotations

import os

# onnxruntime otherwise contacts a remote host on import (and waits ~10 s offline).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from ._lazy import lazy_exports  # noqa: E402

__version__ = "0.1.0"

_LAZY = {
    "create_model": "u2seg.weights",   # builds, then loads pretrained weights
    "list_models": "u2seg.models",
    "Predictor": "u2seg.infer",
    "remove": "u2seg.infer",
    "load_image": "u2seg.infer",
}

__all__ = ["__version__", *_LAZY]
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
