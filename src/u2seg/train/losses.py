"""Deep-supervision losses for U²-Net (seven logit maps) and U-Net (one).

The official U²-Net training sums ``nn.BCELoss`` over the sigmoids of its seven outputs
(``muti_bce_loss_fusion``: d0 fused + d1 … d6, all weight 1). :class:`DeepSupervisionLoss` does
the same on logits (``binary_cross_entropy_with_logits``, numerically safer, equal in value),
with per-output weights (PaddleSeg's ``coef``), a multi-class mode (cross-entropy with an ignore
index), and optional soft Dice and IoU (Jaccard) terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DeepSupervisionLoss", "soft_dice_iou"]

Mode = Literal["binary", "multiclass"]


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of one loss per model output.

    ``loss(outputs, target) -> (total, parts)``:

    - ``outputs``: the model's tuple of logits ``(d0, d1, …)``, each N×C×H×W (a bare tensor is
      taken as a 1-tuple); C = 1 for ``"binary"``, C = K ≥ 2 for ``"multiclass"``.
    - ``target``: ``"binary"``: N×H×W or N×1×H×W, values in [0, 1] (bool, integer or float; soft
      targets allowed), pixels equal to ``ignore_index`` excluded. ``"multiclass"``: N×H×W (or
      N×1×H×W) integer class indices in 0 … K−1 or ``ignore_index``.
    - per output i: ``L_i = CE_i + dice_weight · Dice_i + iou_weight · IoU_i`` where CE is the
      mean binary cross-entropy (``"binary"``, equal to ``nn.BCELoss()`` on sigmoids) or the
      mean cross-entropy over non-ignored pixels (``"multiclass"``); ``total = Σ w_i · L_i``
      with ``weights`` (default all 1: the official U²-Net loss).
    - ``parts`` (floats, for logging): ``"d0"``, ``"d1"``, … (each ``L_i``, unweighted),
      ``"bce"`` or ``"ce"``, ``"dice"``, ``"iou"`` (each term's weighted sum over the outputs;
      ``dice``/``iou`` only when their weight is > 0), and ``"total"``; the terms add up to
      the total.

    Dice and IoU are soft, on probabilities (sigmoid / softmax), over the whole batch per class
    (``(2·Σpg + s) / (Σp + Σg + s)`` and ``(Σpg + s) / (Σp + Σg − Σpg + s)`` with ``s =
    smooth``), averaged over classes (the foreground only in ``"binary"``); the loss terms are
    1 − those. Ignored pixels count in neither.
    """

    def __init__(self, mode: Mode, *, weights: Sequence[float] | None = None, ignore_index: int | None = 255,
                 dice_weight: float = 0.0, iou_weight: float = 0.0, smooth: float = 1.0):
        super().__init__()
        if mode not in ("binary", "multiclass"):
            raise ValueError(f"mode must be 'binary' or 'multiclass', got {mode!r}")
        self.mode = mode
        if weights is not None:
            weights = tuple(float(w) for w in weights)
            if not weights:
                raise ValueError("weights is empty: give one weight per model output (or None for all 1)")
            if any(not math.isfinite(w) or w < 0 for w in weights):
                raise ValueError(f"weights must be finite and ≥ 0, got {weights}")
            if not any(weights):
                raise ValueError("weights are all 0: nothing would be trained")
        self.weights = weights
        if ignore_index is not None and int(ignore_index) != ignore_index:
            raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        for name, value in (("dice_weight", dice_weight), ("iou_weight", iou_weight), ("smooth", smooth)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and ≥ 0, got {value}")
        self.dice_weight = float(dice_weight)
        self.iou_weight = float(iou_weight)
        self.smooth = float(smooth)

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, weights={self.weights}, ignore_index={self.ignore_index}, "
                f"dice_weight={self.dice_weight}, iou_weight={self.iou_weight}, smooth={self.smooth}")

    def forward(self, outputs: Sequence[Tensor] | Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
        if not outputs:
            raise ValueError("no model outputs given")
        weights = self._weights_for(len(outputs))
        _check_outputs(outputs, self.mode)
        if self.mode == "binary":
            target, valid = self._binary_target(target, outputs[0])
        else:
            target, valid = self._multiclass_target(target, outputs[0])
        one_hot = None
        if self.mode == "multiclass" and (self.dice_weight or self.iou_weight):
            one_hot = F.one_hot(target.clamp(0, outputs[0].shape[1] - 1), outputs[0].shape[1])
            one_hot = one_hot.permute(0, 3, 1, 2)

        ce_name = "bce" if self.mode == "binary" else "ce"
        total = None
        terms: dict[str, Tensor] = {}
        per_output: list[Tensor] = []
        for weight, logits in zip(weights, outputs):
            x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
            pieces = {ce_name: self._cross_entropy(x, target, valid)}
            if self.dice_weight or self.iou_weight:
                if self.mode == "binary":
                    probs, truth = torch.sigmoid(x), target.to(x.dtype)
                else:
                    probs, truth = torch.softmax(x, dim=1), one_hot.to(x.dtype)
                dice, iou = soft_dice_iou(probs, truth, None if valid is None else valid.unsqueeze(1),
                                          smooth=self.smooth)
                if self.dice_weight:
                    pieces["dice"] = self.dice_weight * (1 - dice)
                if self.iou_weight:
                    pieces["iou"] = self.iou_weight * (1 - iou)
            loss_i = sum(pieces.values())
            per_output.append(loss_i)
            for name, value in pieces.items():
                terms[name] = terms[name] + weight * value if name in terms else weight * value
            total = weight * loss_i if total is None else total + weight * loss_i

        names = [f"d{i}" for i in range(len(outputs))] + list(terms) + ["total"]
        values = torch.stack([v.detach().to(torch.float64) for v in (*per_output, *terms.values(), total)])
        return total, dict(zip(names, values.tolist()))  # one device→host copy for all parts

    # -- pieces ------------------------------------------------------------------------------

    def _weights_for(self, n: int) -> tuple[float, ...]:
        if self.weights is None:
            return (1.0,) * n
        if len(self.weights) != n:
            raise ValueError(f"{len(self.weights)} loss weights for {n} model outputs; give one weight per "
                             f"output (U²-Net: 7, d0 fused then d1 … d6; U-Net: 1)")
        return self.weights

    def _cross_entropy(self, x: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        if self.mode == "binary":
            if valid is None:
                return F.binary_cross_entropy_with_logits(x, target.to(x.dtype))
            per_pixel = F.binary_cross_entropy_with_logits(x, target.to(x.dtype), reduction="none")
            return (per_pixel * valid.unsqueeze(1)).sum() / valid.sum().clamp_min(1)
        if valid is None:
            return F.cross_entropy(x, target)
        if not bool(valid.any()):  # every pixel ignored: 0, not cross_entropy's NaN (0/0)
            return x.sum() * 0
        return F.cross_entropy(x, target, ignore_index=self.ignore_index)

    def _binary_target(self, target: Tensor, first: Tensor) -> tuple[Tensor, Tensor | None]:
        target = _as_tensor(target, first.device)
        if target.ndim == 4:
            if target.shape[1] != 1:
                raise ValueError(f"binary target must have one channel (N×1×H×W or N×H×W), got shape "
                                 f"{tuple(target.shape)}; for class indices use mode='multiclass'")
        elif target.ndim == 3:
            target = target.unsqueeze(1)
        else:
            raise ValueError(f"binary target must be N×H×W or N×1×H×W, got shape {tuple(target.shape)}")
        _check_size(target.shape[0], target.shape[-2:], first)
        if target.dtype == torch.bool:
            return target, None
        valid = None
        if self.ignore_index is not None:
            ignored = target == self.ignore_index
            if bool(ignored.any()):
                valid = ~ignored[:, 0]
                target = torch.where(ignored, torch.zeros_like(target), target)
        lo, hi = float(target.min()), float(target.max())
        if not (0 <= lo and hi <= 1):  # also catches NaN
            raise ValueError(f"binary target values must lie in [0, 1] (or equal ignore_index "
                             f"{self.ignore_index}), got [{lo:g}, {hi:g}]; divide 0..255 masks by 255")
        return target, valid

    def _multiclass_target(self, target: Tensor, first: Tensor) -> tuple[Tensor, Tensor | None]:
        target = _as_tensor(target, first.device)
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if target.ndim != 3:
            raise ValueError(f"multiclass target must be N×H×W class indices (or N×1×H×W), got shape "
                             f"{tuple(target.shape)}")
        if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
            raise ValueError(f"multiclass target must hold integer class indices, got {target.dtype}")
        _check_size(target.shape[0], target.shape[-2:], first)
        target = target.long()
        k = first.shape[1]
        valid = None
        if self.ignore_index is not None:
            ignored = target == self.ignore_index
            if bool(ignored.any()):
                valid = ~ignored
        checked = target if valid is None else target[valid]
        if checked.numel():
            lo, hi = int(checked.min()), int(checked.max())
            if lo < 0 or hi >= k:
                raise ValueError(f"multiclass target holds class {lo if lo < 0 else hi}, outside 0 … {k - 1}"
                                 + (f" and not the ignore index {self.ignore_index}"
                                    if self.ignore_index is not None else ""))
        return target, valid


def soft_dice_iou(probs: Tensor, truth: Tensor, valid: Tensor | None = None, *,
                  smooth: float = 1.0) -> tuple[Tensor, Tensor]:
    """Soft Dice and IoU (Jaccard) scores of N×C×H×W probabilities against N×C×H×W targets, per
    class over the whole batch, then averaged over C; ``valid`` (N×1×H×W) masks pixels out."""
    if valid is not None:
        mask = valid.to(probs.dtype)
        probs, truth = probs * mask, truth * mask
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * truth).sum(dims)
    total = probs.sum(dims) + truth.sum(dims)
    eps = 1e-7  # smooth = 0 on an empty class would be 0/0
    dice = (2 * intersection + smooth) / (total + smooth).clamp_min(eps)
    iou = (intersection + smooth) / (total - intersection + smooth).clamp_min(eps)
    return dice.mean(), iou.mean()


def _as_tensor(target, device) -> Tensor:
    if not isinstance(target, Tensor):
        target = torch.as_tensor(target)
    return target.to(device)


def _check_outputs(outputs: tuple[Tensor, ...], mode: str) -> None:
    first = outputs[0]
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"output d{i} must be an N×C×H×W tensor of logits, got {shape}")
        if out.shape != first.shape:
            raise ValueError(f"output d{i} has shape {tuple(out.shape)} but d0 has {tuple(first.shape)}; "
                             "deep-supervision outputs must share one size")
    channels = first.shape[1]
    if mode == "binary" and channels != 1:
        raise ValueError(f"binary mode needs outputs with 1 channel, got {channels} "
                         "(use mode='multiclass' for num_classes > 1)")
    if mode == "multiclass" and channels < 2:
        raise ValueError(f"multiclass mode needs outputs with ≥ 2 channels (one per class), got {channels} "
                         "(use mode='binary' for one foreground channel)")


def _check_size(batch: int, size, first: Tensor) -> None:
    if batch != first.shape[0] or tuple(size) != tuple(first.shape[-2:]):
        raise ValueError(f"target is {batch}×{size[0]}×{size[1]} (N×H×W) but the outputs are "
                         f"{first.shape[0]}×{first.shape[2]}×{first.shape[3]}; resize the target (nearest) "
                         "to the network input's size")
