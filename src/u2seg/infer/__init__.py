"""Inference: the Predictor, the streaming engine every front end runs through, backends,
refinement and the user options.

Names load on first use, so that light submodules (the CLI's option lists) don't pull in torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports


_LAZY = {
    "Plan": "files", "Task": "files", "plan_outputs": "files",
    "IMAGE_EXTENSIONS": "u2seg.image_io", "OUTPUT_FORMATS": "u2seg.image_encode", "encode_image": "u2seg.image_encode",
    "load_image": "u2seg.image_io", "save_image": "u2seg.image_encode",
    "parse_color": "postprocess", "probability_to_mask": "postprocess",
    "RefineOptions": "refine", "refine_output": "refine",
    "Predictor": "predictor", "Preprocessing": "u2seg.preprocessing", "TTA": "predictor",
    "Engine": "engine", "Item": "job_types", "Report": "job_types", "run_job": "engine",
    "RemovalJob": "removal", "remove": "removal", "remove_files": "removal", "render": "removal",
    "get_predictor": "sessions",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
