"""Export (ONNX, OpenVINO, TorchScript), int8 quantisation and verification against PyTorch.

Names load on first use: the export cache is read at start-up without importing torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "FORMATS": "exporter", "ExportResult": "exporter", "export_model": "exporter", "verify_export": "exporter",
    "ProbabilityHead": "onnx", "export_onnx": "onnx",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
