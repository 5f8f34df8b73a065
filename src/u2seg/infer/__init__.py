"""Inference: image I/O, the Predictor, backends and post-processing.

Names load on first use, so that light submodules (the CLI's option lists) don't pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Plan": "files", "Task": "files", "plan_outputs": "files",
    "IMAGE_EXTENSIONS": "image_io", "OUTPUT_FORMATS": "image_io", "encode_image": "image_io",
    "load_image": "image_io", "save_image": "image_io",
    "parse_color": "postprocess", "probability_to_mask": "postprocess",
    "RefineOptions": "refine", "refine_output": "refine",
    "Predictor": "predictor", "Preprocessing": "predictor",
    "FilesReport": "removal", "remove": "removal", "remove_files": "removal", "render": "removal",
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
