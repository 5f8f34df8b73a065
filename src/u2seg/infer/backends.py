"""Inference backends: one small interface that the Predictor uses, whatever runs the network.

A backend takes a pre-processed float32 batch ``N×C×H×W`` and returns the fused output's
probabilities ``N×K×H×W`` (K = 1 for binary models, the classes otherwise).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

__all__ = ["Backend", "TorchBackend", "default_device"]


class Backend(Protocol):
    name: str
    num_classes: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchBackend:
    """Eager PyTorch on the CPU or CUDA; probabilities are sigmoid (binary) or softmax (classes)."""

    name = "torch"

    def __init__(self, model: nn.Module, *, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        self.num_classes = int(getattr(model, "num_classes", 1))

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        fused = self.model(x)[0].float()
        probs = torch.sigmoid(fused) if self.num_classes == 1 else torch.softmax(fused, dim=1)
        return probs.cpu().numpy()
