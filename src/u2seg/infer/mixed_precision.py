"""Reduced-precision inference with the few precision-sensitive layers kept in fp32.

PLACEHOLDER: figures filled in after the scan.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads only when a network is needed
    from torch import nn

__all__ = ["FP32_LAYERS", "keep_in_fp32"]

FP32_LAYERS: dict[str, tuple[str, ...]] = {
    "u2netp": (),
}

_REDUCED = ("bfloat16", "float16")
_state = threading.local()  # per thread: a stack of (module id, autocast context or None)


def keep_in_fp32(model: "nn.Module", names: Iterable[str]) -> "nn.Module":
    """Make the modules ``names`` (as in ``model.named_modules()``) run in fp32 under autocast.

    Each gets a forward pre-hook that, when autocast is on for its input's device, turns
    autocast off and casts bf16/fp16 tensor inputs to fp32, and a forward hook (run even when the
    forward raises) that turns it back on. Outputs stay fp32; the layers after them accept that
    under autocast (convs cast to the reduced type, ``cat`` and ``+`` promote to fp32). Without
    autocast the hooks do nothing. Idempotent; returns ``model`` (changed in place).
    """
    modules = dict(model.named_modules())
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise KeyError(f"no such modules in {type(model).__name__}: {', '.join(unknown)}")
    for name in names:
        module = modules[name]
        if getattr(module, "_u2seg_fp32", False):
            continue
        module.register_forward_pre_hook(_enter_fp32, with_kwargs=True)
        module.register_forward_hook(_leave_fp32, always_call=True)
        module._u2seg_fp32 = True
    return model


def _enter_fp32(module: "nn.Module", args: tuple, kwargs: dict) -> "tuple[tuple, dict] | None":
    import torch

    stack = _stack()
    device = _device_type((args, kwargs))
    if device is None or not _autocast_enabled(torch, device):
        stack.append((id(module), None))
        return None
    context = torch.autocast(device, enabled=False)
    context.__enter__()
    stack.append((id(module), context))
    return _to_fp32(args), _to_fp32(kwargs)


def _leave_fp32(module: "nn.Module", args: tuple, output: Any) -> None:
    stack = _stack()
    if stack and stack[-1][0] == id(module):  # not ours if an earlier pre-hook raised
        context = stack.pop()[1]
        if context is not None:
            context.__exit__(None, None, None)


def _stack() -> list:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def _autocast_enabled(torch: Any, device: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device))
    except TypeError:  # torch < 2.4: no device argument
        return bool(torch.is_autocast_cpu_enabled() if device == "cpu" else torch.is_autocast_enabled())


def _device_type(value: Any) -> "str | None":
    import torch

    if isinstance(value, torch.Tensor):
        return value.device.type
    if isinstance(value, (tuple, list)):
        items: Iterable = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return None
    for item in items:
        device = _device_type(item)
        if device is not None:
            return device
    return None


def _to_fp32(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if str(value.dtype).removeprefix("torch.") in _REDUCED else value
    if isinstance(value, tuple):
        return tuple(_to_fp32(item) for item in value)
    if isinstance(value, list):
        return [_to_fp32(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_fp32(item) for key, item in value.items()}
    return value
