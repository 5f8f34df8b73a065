"""Training: losses (more to come). Names load on first use, so importing the package is cheap."""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "DeepSupervisionLoss": "losses",
    "soft_dice_iou": "losses",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
