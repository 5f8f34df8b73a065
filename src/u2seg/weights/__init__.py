"""Pretrained weights: the registry, the local cache, downloads and format converters."""

from .cache import fetch_weights, is_offline, load_network, resolve_pretrained, u2seg_home, weights_dir
from .convert import (LoadedWeights, convert_file, infer_architecture, load_model, load_weights_into, read_weights,
                      save_pretrained, state_dict_from_fused_onnx)
from .registry import (IMAGENET_MEAN, IMAGENET_STD, PipWheelSource, PretrainedWeights, UrlSource,
                       default_weights_for, get_weights, list_weights, register_weights)

__all__ = [
    "fetch_weights", "is_offline", "load_network", "resolve_pretrained", "u2seg_home", "weights_dir",
    "LoadedWeights", "convert_file", "infer_architecture", "load_model", "load_weights_into", "read_weights",
    "save_pretrained", "state_dict_from_fused_onnx",
    "IMAGENET_MEAN", "IMAGENET_STD", "PipWheelSource", "PretrainedWeights", "UrlSource",
    "default_weights_for", "get_weights", "list_weights", "register_weights",
]
