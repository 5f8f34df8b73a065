"""Model registry: one keyword-only builder per variant, looked up by name (timm-style).

``create_model(name)`` builds; builders only build (no I/O). Pretrained weights are loaded one
layer up, by :func:`u2seg.weights.create_model` (``u2seg.create_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import nn

from .u2net import U2NET_CONFIGS, U2Net
from .unet import UNet

__all__ = ["register_model", "create_model", "list_models", "model_description"]

log = logging.getLogger(__name__)

ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = "") -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator that adds a builder ``fn(*, num_classes, in_channels) -> nn.Module``."""

    def add(fn: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        return fn

    return add


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_BUILDERS)


def model_description(name: str) -> str:
    return _DESCRIPTIONS[_check_name(name)]


def _check_name(name: str) -> str:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return name


def create_model(name: str, *, num_classes: int = 1, in_channels: int = 3) -> nn.Module:
    """Build model ``name`` with fresh weights (no I/O). The model carries ``arch`` (its registry
    name) so it can be saved and reloaded by name. Pretrained weights: :func:`u2seg.create_model`
    (``u2seg.weights.create_model``), which sits above the builders, as torchvision's builders
    take ``weights``."""
    model = _BUILDERS[_check_name(name)](num_classes=num_classes, in_channels=in_channels)
    model.arch = name
    return model


@register_model("u2net")
def u2net(*, num_classes: int = 1, in_channels: int = 3) -> U2Net:
    """U²-Net, the full model (44.0 M parameters)."""
    return U2Net(U2NET_CONFIGS["u2net"], num_classes=num_classes, in_channels=in_channels)


@register_model("u2netp")
def u2netp(*, num_classes: int = 1, in_channels: int = 3) -> U2Net:
    """U²-Net-P, the small model (1.13 M parameters)."""
    return U2Net(U2NET_CONFIGS["u2netp"], num_classes=num_classes, in_channels=in_channels)


@register_model("unet")
def unet(*, num_classes: int = 1, in_channels: int = 3) -> UNet:
    """Plain U-Net (4 levels, 64…1024 channels, 32.1 M parameters)."""
    return UNet(num_classes=num_classes, in_channels=in_channels)
