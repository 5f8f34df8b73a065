"""Pretrained weights: the registry, the local cache, downloads and format converters.

Names load on first use: finding and verifying cached weights needs no torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports


_LAZY = {
    "create_model": "cache", "fetch_weights": "cache", "is_offline": "cache", "load_network": "cache", "resolve_pretrained": "cache",
    "resolve_weights": "cache", "u2seg_home": "cache", "weights_dir": "cache",
    "LoadedWeights": "convert", "convert_file": "convert", "infer_architecture": "convert", "load_model": "convert",
    "load_weights_into": "convert", "read_weights": "convert", "save_pretrained": "convert",
    "state_dict_from_fused_onnx": "convert",
    "DEFAULT_WEIGHTS": "registry",
    "IMAGENET_MEAN": "registry", "IMAGENET_STD": "registry", "PipWheelSource": "registry",
    "PretrainedWeights": "registry", "UrlSource": "registry", "default_weights_for": "registry",
    "get_weights": "registry", "list_weights": "registry", "register_weights": "registry",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
