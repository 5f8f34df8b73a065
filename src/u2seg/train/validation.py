"""Evaluation during training: the validation metrics (maxF and friends for binary models, mIoU
for multi-class ones) and the recipe (pre-processing) saved with the weights."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .logs import jsonable

__all__ = ["recipe", "transform_size", "validate"]


def validate(net: torch.nn.Module, loader: Any, forward: Callable[..., tuple[torch.Tensor, ...]],
             loss_fn: Callable[..., tuple[torch.Tensor, dict[str, float]]], device: torch.device,
             num_classes: int) -> dict[str, Any]:
    """The headline metrics of ``net`` (in eval mode, no grad) over ``loader``, with ``main`` (the
    metric ``best/`` follows) and the mean ``loss``."""
    from ..metrics import ConfusionMatrix, SODMetrics
    from ..metrics.headline import headline

    binary = num_classes == 1
    metric = SODMetrics() if binary else ConfusionMatrix(num_classes)
    losses = []
    for batch in loader:
        images = batch["image"].to(device)
        masks = batch["mask"]
        outputs = forward(images, net)
        total, _ = loss_fn(outputs, masks.to(device))
        losses.append(float(total))
        logits = outputs[0].float().cpu()
        if binary:
            probs = torch.sigmoid(logits)[:, 0].numpy()
            for prob, gt in zip(probs, masks[:, 0].numpy()):
                metric.update(prob, gt)
        else:
            metric.update(logits.argmax(1).numpy(), masks.numpy())
    out = headline(metric.results(), "binary" if binary else "multiclass")
    if "IoU" in out:
        out["IoU"] = [jsonable(v) for v in out["IoU"]]
    out["main"] = out["maxF" if binary else "mIoU"]
    out["loss"] = float(np.mean(losses)) if losses else float("nan")
    return out


def transform_size(spec: Any) -> int | None:
    """The square input size a transform config resizes to (official recipes: 320 by default)."""
    if isinstance(spec, dict):
        size = spec.get("size")
        return int(size) if isinstance(size, int) else (320 if spec.get("name", "").startswith("official") else None)
    if isinstance(spec, str) and spec.startswith("official"):
        return 320
    return None


def recipe(data: Any, dataset: Any) -> dict[str, Any]:
    """The pre-processing saved weights expect, so that every front end runs them as trained: the
    evaluation transform's input size, or without a validation set the training transform's resize
    size (as the official recipe infers at 320 after training on 288 crops of 320-px images); the
    normalisation of ``dataset``'s transform. ``data``: the config's ``data`` section."""
    size = transform_size(data.val.transform if data.val else None) or transform_size(data.train.transform)
    out: dict[str, Any] = {"input_size": [size, size]} if size else {}
    norm = getattr(getattr(dataset, "transform", None), "norm", None)
    if norm is not None:
        out.update(mean=list(norm.mean), std=list(norm.std), input_norm=norm.input_norm)
    return out
