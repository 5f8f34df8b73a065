"""Inference: image I/O, the Predictor, backends and post-processing.

Names load on first use, so that light submodules (the CLI's option lists) don't pull in torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports


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
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
