"""Network definitions and the model registry. No I/O here: weights live in u2seg.weights."""

from .registry import create_model, list_models, model_description, register_model
from .u2net import REBNCONV, RSU, RSU4F, U2NET_CONFIGS, StageSpec, U2Net, U2NetConfig
from .unet import UNet

__all__ = [
    "create_model", "list_models", "model_description", "register_model",
    "REBNCONV", "RSU", "RSU4F", "StageSpec", "U2Net", "U2NetConfig", "U2NET_CONFIGS", "UNet",
]
