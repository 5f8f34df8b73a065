"""Training: YAML configs, the trainer and the deep-supervision losses. Names load on first use,
so importing the package is cheap.

Modules: ``config`` (YAML → TrainConfig: the schema and its value checks), ``config_parse`` (dicts
→ typed dataclasses, ``--set`` overrides), ``trainer`` (the loop: ``train``, ``Trainer``),
``build`` (seeds, precision, data, model, loss from the config), ``batches`` (where batches come
from, transform stages), ``sampler`` (which samples make each step), ``optim`` (optimizer,
learning-rate schedule), ``losses``, ``ema``, ``checkpoints`` (save, load, RNG states),
``interrupt`` (Ctrl-C), ``distributed`` (torchrun: process group, partitioning, all-reduce of
logs), ``logs`` (JSONL, CSV, TensorBoard), ``validation`` (metrics during training, ``best/``, the
saved recipe) and ``previews``."""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "DeepSupervisionLoss": "losses",
    "soft_dice_iou": "losses",
    "ConfigError": "config", "TrainConfig": "config", "load_config": "config", "config_from_dict": "config",
    "Trainer": "trainer", "train": "trainer", "latest_checkpoint": "checkpoints",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
