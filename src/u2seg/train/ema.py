"""An exponential moving average (EMA) of a model's weights, for evaluation and the saved weights.

After each optimizer step, every floating-point parameter and buffer (BatchNorm's running mean and
variance included) moves toward the trained model's:

    ema ← d·ema + (1 − d)·model,    d = min(decay, (1 + t) / (10 + t))

where ``t`` is the number of updates so far. The ramp (as in timm's ``ModelEmaV3`` with warm-up,
and TensorFlow's ``num_updates``) keeps the average from dragging the random initial weights
along in a short run: d is 0.1 at the first update, 0.5 at the ninth, ``decay`` later. Integer
buffers (``num_batches_tracked``) are copied.

The averaged copy smooths the noise of the last steps. Measured (BENCHMARKS.md, run G): +0.014
maxF early in a high-learning-rate run, nothing at the end of a cosine decay, which smooths alike.
"""

from __future__ import annotations

import copy

import torch

__all__ = ["ModelEMA"]


class ModelEMA:
    """A frozen copy of ``model`` that :meth:`update` averages toward ``model``'s weights."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - self.current_decay()
        current = dict(_tensors(model))
        averaged, latest, copied, source = [], [], [], []
        for name, mine in _tensors(self.module):
            theirs = current[name].detach()
            if mine.is_floating_point():
                averaged.append(mine)
                latest.append(theirs)
            else:
                copied.append(mine)
                source.append(theirs)
        if averaged:
            torch._foreach_lerp_(averaged, latest, weight)  # one fused pass over all tensors
        for mine, theirs in zip(copied, source, strict=True):
            mine.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def _tensors(model: torch.nn.Module):
    """Parameters and buffers with their names."""
    yield from model.named_parameters()
    yield from model.named_buffers()
