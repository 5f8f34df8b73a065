"""ONNX export of u2seg models, with dynamic batch and image size, and its verification."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..fileio import write_bytes_atomic

__all__ = ["ProbabilityHead", "export_onnx", "onnx_bytes", "run_onnx", "INPUT_NAME", "OUTPUT_NAME"]

INPUT_NAME = "input"
OUTPUT_NAME = "probability"
DEFAULT_OPSET = 17


class ProbabilityHead(nn.Module):
    """The model's fused output d0 as probabilities (sigmoid, or softmax over classes).

    This is what inference needs and what rembg's sessions read (their first output), so the
    exported graph carries one output instead of seven.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_classes = int(getattr(model, "num_classes", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.model(x)[0]
        return torch.sigmoid(fused) if self.num_classes == 1 else torch.softmax(fused, dim=1)


def onnx_bytes(model: nn.Module, *, input_size: Sequence[int] = (320, 320), dynamic: bool = True,
               opset: int = DEFAULT_OPSET, all_outputs: bool = False) -> bytes:
    """Serialise ``model`` to ONNX: NCHW float32 in; out, ``ProbabilityHead(model)``'s
    probabilities, or with ``all_outputs`` sigmoid of all seven maps (``d0`` … ``d6``)."""
    head = _AllSigmoids(model) if all_outputs else ProbabilityHead(model)
    head = head.eval().to("cpu", memory_format=torch.contiguous_format)
    outputs = [f"d{i}" for i in range(7)] if all_outputs else [OUTPUT_NAME]
    width, height = input_size
    example = torch.zeros(1, int(getattr(model, "in_channels", 3)), height, width)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is the one that needs no extra packages (onnxscript);
        # its deprecation notice and tracer warnings about shape comparisons are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(head, (example,), buffer, input_names=[INPUT_NAME], output_names=outputs,
                          opset_version=opset, do_constant_folding=True, dynamo=False,
                          dynamic_axes={name: axes for name in (INPUT_NAME, *outputs)} if dynamic else None)
    return buffer.getvalue()


class _AllSigmoids(nn.Module):
    """The official export's outputs: sigmoid of all seven maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.sigmoid(o) for o in self.model(x))


def export_onnx(model: nn.Module, path: str | Path, **options) -> Path:
    """Write the ONNX file atomically; options as for :func:`onnx_bytes`."""
    path = Path(path)
    write_bytes_atomic(onnx_bytes(model, **options), path)
    return path


def run_onnx(path: str | Path, batch: np.ndarray) -> np.ndarray:
    """Run an exported file with onnxruntime on the CPU (used for verification)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})[0]
