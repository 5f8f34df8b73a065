"""Evaluation during training: the validation metrics (maxF and friends for binary models, mIoU
for multi-class ones), ``best/`` (the weights of the best evaluation so far, or the final weights
when there is no validation set) and the recipe (pre-processing) saved with the weights."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..weights import save_pretrained
from .logs import jsonable

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["evaluate_and_log", "recipe", "save_best", "save_final_weights", "transform_size", "validate"]

log = logging.getLogger(__name__)


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


# -- the trainer's evaluations and best/ ------------------------------------------------------------


def _trainer_recipe(trainer: Trainer) -> dict[str, Any]:
    """The recipe of the weights a trainer saves: its validation set's, else its training set's."""
    t = trainer
    return recipe(t.config.data, t.val_set if t.val_set is not None else t.train_set)


def save_best(trainer: Trainer, metrics: dict[str, Any]) -> bool:
    """Save the evaluated weights (the EMA's when it is on) to ``output_dir/best`` if
    ``metrics["main"]`` beats the trainer's best so far, which it then becomes; returns whether."""
    t = trainer
    main = metrics["main"]
    if not math.isfinite(main) or (t.best is not None and main <= t.best):
        return False
    t.best, t.best_step = main, t.step
    name = "maxF" if t.binary else "mIoU"
    metadata: dict[str, Any] = {"step": t.step, "metric": name, name: main, **_trainer_recipe(t)}
    if t.ema is not None:
        metadata["ema_decay"] = t.ema.decay
    save_pretrained(t.weights, t.out / "best", metadata=metadata)
    return True


def save_final_weights(trainer: Trainer) -> None:
    """Without a validation set the final weights are the best we know: to ``output_dir/best``."""
    t = trainer
    save_pretrained(t.weights, t.out / "best", metadata={"step": t.step, **_trainer_recipe(t)})


def evaluate_and_log(trainer: Trainer, bar: Any) -> None:
    """Evaluate now (rank 0), keep ``best/``, write the ``eval`` log row and a one-line summary
    (above the progress ``bar`` when it shows, else to the log)."""
    t = trainer
    t.last_eval = t.evaluate()
    improved = save_best(t, t.last_eval)
    t.logs.write({"kind": "eval", "step": t.step, "time": time.time(), "train_seconds": t.train_seconds,
                  "run_seconds": t.clock(), **t.last_eval, "best": improved}, to_csv=False)
    summary = f"step {t.step}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in t.last_eval.items() if isinstance(v, float) and k != "main")
    if t.progress:
        bar.write(summary)
    else:
        log.info("%s", summary)
