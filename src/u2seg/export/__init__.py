"""Export (ONNX, OpenVINO, TorchScript), int8 quantisation and verification against PyTorch.

Names load on first use: the export cache is read at start-up without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "FORMATS": "exporter", "ExportResult": "exporter", "export_model": "exporter", "verify_export": "exporter",
    "ProbabilityHead": "onnx", "export_onnx": "onnx",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
