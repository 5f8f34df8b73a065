"""What a training run is made of, built from its config: the random seeds, the precision, the
datasets and the batch source (with the transform stages), the number of steps, the model
(pretrained weights, SyncBatchNorm, device, memory format) and the loss. The optimizer and the learning-rate schedule
are :mod:`.optim`'s; :meth:`.trainer.Trainer.setup` calls these in turn.
"""
from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import build_dataset, build_transform, check_dataset
from ..models import create_model
from ..weights import load_weights_into, resolve_pretrained
from .batches import BatchSource
from .config import TrainConfig
from .distributed import Distributed
from .losses import DeepSupervisionLoss

__all__ = ["TrainingData", "build_data", "build_loss", "build_model", "seed_everything", "total_steps", "train_mode",
           "use_bf16"]

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and torch; ``deterministic`` also makes torch and cuDNN pick
    deterministic kernels (process-wide: :func:`.trainer.train` gives the caller's settings back)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast for ``precision: bf16``, and for ``auto`` where the hardware has bf16 units
    (CUDA GPUs that support it; CPUs with AVX-512 bf16 or AMX). Elsewhere bf16 is emulated and
    slower than fp32, so ``auto`` picks fp32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


@dataclass
class TrainingData:
    """The datasets of a run and where its training batches come from."""

    train_set: Any
    val_set: Any | None
    # (until, transform): the earlier stages, then the configured transform (until inf) for the rest
    stage_transforms: list[tuple[float, Any]]
    source: BatchSource


def build_data(config: TrainConfig, device: torch.device, dist: Distributed, *, progress: bool) -> TrainingData:
    """The config's datasets, checked (rank 0 reports bad files), and the batch source with the
    decode-once caches every transform stage needs already made."""
    c, num_classes = config, config.model.num_classes
    # rank 0 first: it makes a synthetic set the others then read, and reports bad files once
    with dist.main_first():
        train_set = build_dataset(c.data.train, num_classes)
        if dist.is_main:
            check_dataset(train_set)
        val_set = None
        if c.data.val is not None:
            val_set = build_dataset(c.data.val, num_classes)
            if dist.is_main:
                check_dataset(val_set)
        stages = [(s.until, build_transform(s.transform)) for s in c.data.train.stages or ()]
        stages.append((math.inf, train_set.transform))
        source = BatchSource(train_set, device, workers=c.workers, cache=c.data.cache,
                             cache_dir=c.data.cache_dir, progress=progress and dist.is_main)
        source.prepare(t for _, t in stages)  # mmap: rank 0 decodes, the others reuse
    return TrainingData(train_set, val_set, stages, source)


def total_steps(config: TrainConfig, samples: int, global_batch: int) -> int | None:
    """The run's length in steps: ``iterations``, or ``epochs`` over ``samples`` in global batches;
    None when a time budget (``max_minutes``) alone ends the run."""
    if config.iterations is not None:
        return config.iterations
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * samples / global_batch))
    return None


def build_model(config: TrainConfig, device: torch.device, dist: Distributed) -> tuple[torch.nn.Module, list[str]]:
    """The config's model on ``device``, from its ``pretrained`` weights when given, and the names
    of the tensors those weights could not fill (another shape: e.g. a head of other classes)."""
    c = config
    torch.manual_seed(c.seed)  # the model's initial weights do not depend on the data checks
    model = create_model(c.model.name, num_classes=c.model.num_classes, in_channels=c.model.in_channels)
    skipped: list[str] = []
    if c.model.pretrained not in (False, None):
        with dist.main_first():  # it may fetch or convert into the cache: once
            path = resolve_pretrained(c.model.name, c.model.pretrained)
        skipped = load_weights_into(model, path)
        if skipped:
            log.warning("fine-tuning from %s: %d tensors of another shape start from scratch: %s",
                        path, len(skipped), ", ".join(skipped))
        else:
            log.info("loaded all weights from %s", path)
    if c.sync_bn and dist.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, skipped


def train_mode(model: torch.nn.Module, *, freeze_bn: bool = False) -> None:
    """``model.train()``; with ``freeze_bn`` its BatchNorm layers stay in eval mode: they normalise
    with the running statistics they were loaded with and leave them alone, while their scale and
    shift still learn. Fine-tuning pretrained weights needs it when batches are small crops: their
    statistics replace the pretrained ones and wreck the network (BENCHMARKS.md, the demo)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def build_loss(config: TrainConfig) -> DeepSupervisionLoss:
    """The deep-supervision loss: binary for ``num_classes == 1``, else multiclass."""
    lo = config.loss
    mode = "binary" if config.model.num_classes == 1 else "multiclass"
    return DeepSupervisionLoss(mode, weights=lo.weights, dice_weight=lo.dice_weight, iou_weight=lo.iou_weight)
