"""Training: YAML configs, the trainer (checkpoints, exact resume, evaluation, previews) and the
deep-supervision losses. Names load on first use, so importing the package is cheap."""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "DeepSupervisionLoss": "losses",
    "soft_dice_iou": "losses",
    "ConfigError": "config", "TrainConfig": "config", "load_config": "config", "config_from_dict": "config",
    "train": "trainer", "latest_checkpoint": "trainer",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
