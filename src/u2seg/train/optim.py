"""The optimizer and the learning-rate schedule (warm-up, then constant, poly or cosine decay
over the steps or over a time budget)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from .config import TrainConfig

__all__ = ["build_optimizer", "build_schedule"]


def build_optimizer(config: TrainConfig, params: Iterable[torch.nn.Parameter],
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    """The config's optimizer (``optimizer.name``: adam, adamw or sgd) over ``params``.

    On CUDA, Adam and AdamW run fused (one kernel updates every parameter: U²-Net's ~350 tensors
    would otherwise cost hundreds of launches per step); elsewhere torch picks its default."""
    o = config.optimizer
    fused = True if device is not None and device.type == "cuda" else None
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, fused=fused)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def build_schedule(config: TrainConfig, total: int | None,
                   clock: Callable[[], float] | None = None) -> Callable[[int], float]:
    """The learning-rate factor (of ``optimizer.lr``) at step ``t`` (0-based).

    After the warm-up, poly and cosine decay over the steps (``total``) or, with ``max_minutes``,
    over the time budget: progress is ``clock() / budget`` (``clock``: seconds into the run), or
    the further of the two when both are set."""
    s, lr = config.schedule, config.optimizer.lr
    floor = s.min_lr / lr
    warm = s.warmup_iters
    budget = config.max_minutes * 60 if config.max_minutes else None
    if budget is not None and clock is None:
        raise ValueError("a schedule over max_minutes needs the run's clock")

    def factor(t: int) -> float:
        if warm and t < warm:
            return s.warmup_ratio + (1 - s.warmup_ratio) * t / warm
        if s.name == "constant":
            return 1.0
        progress = 0.0
        if total is not None:
            progress = (t - warm) / max(1, total - warm)
        if budget is not None:
            progress = max(progress, clock() / budget)
        progress = min(1.0, progress)
        if s.name == "poly":
            return floor + (1 - floor) * (1 - progress) ** s.power
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
