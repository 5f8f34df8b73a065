"""bf16/fp16 autocast with the few precision-sensitive layers of U²-Net kept in fp32.

Why. In the official U²-Net-P weights, ``stage2d.rebnconv2d`` writes one channel (14) that is a
constant, ≈ 226.33 at every pixel of every photo (bias 228.3, weights ≤ 0.03), and
``stage2d.rebnconv1d`` subtracts it again in about 40 of its 64 output channels through biases of
37 to 1361 (channel 7: -6.017 × 226.33 + 1361.25 = -0.64); those channels' values are of size 1.
(The large weights are the "outlier" ones, max/mean |w| ≈ 121, that int8 keeps in fp32.)
Autocast stores conv outputs in bf16 and casts conv weights and biases to bf16, whose step is 1.0
at 226 and 8.0 at 1361: the cancelled channels come out wrong by units, and the masks move. fp16
and TF32 (10 mantissa bits) have 8× finer steps; their masks move ~5× less. Every other conv
costs < 0.75/255 alone.

Measured (``benchmarks/precision_scan.py``: 10 scikit-image photos, 320×320, sigmoid + min-max
as in the pipeline; mask error against fp32 in 1/255 as mean over photos / worst photo / worst
pixel; the reduced kernels emulated on a CPU without bf16 instructions, checked against the real
ones; CPU autocast in torch 2.13 runs the same ops in bf16 as CUDA's: conv, and BatchNorm, ReLU,
max-pool, upsample, cat and + on bf16 inputs):

=============================================  ===================  ===================
                                               bf16 autocast        fp16 autocast
=============================================  ===================  ===================
everything reduced                             3.04 / 9.37 / 165    0.62 / 3.38 / 47
the two convs below kept in fp32 (2.5 % MACs)  0.34 / 1.19 / 22     0.14 / 0.96 / 10
=============================================  ===================  ===================

For scale: fp32 with ±0.5/255 noise on the input moves masks by 0.42 / 2.68 / 26. Keeping only
one of the two is not enough (bf16: 2.81 with ``rebnconv1d`` alone, 2.89 with ``rebnconv2d``
alone): the constant must leave ``rebnconv2d`` in fp32 and be consumed in fp32; between them,
``upsample`` and ``cat`` stay fp32 under autocast once an input is fp32. Keeping the side/fusion
heads (3.05) or the last decoder stage (2.93, 54 % of the MACs) instead does not help.

``u2net``: the same module names exist (same RSU layout), so the same two are listed, but the
sensitivity belongs to the trained weights and was not measured (no u2net weights in the
registry); re-run the scan with ``--model u2net --weights PATH`` before relying on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads only when a network is needed
    from torch import nn

__all__ = ["FP32_LAYERS", "keep_in_fp32"]

_STAGE2D_CANCELLATION = ("stage2d.rebnconv2d.conv_s1", "stage2d.rebnconv1d.conv_s1")

FP32_LAYERS: dict[str, tuple[str, ...]] = {
    "u2netp": _STAGE2D_CANCELLATION,
    "u2net": _STAGE2D_CANCELLATION,  # same names; not measured (see above)
}

_INNER = "_u2seg_fp32_inner_forward"


def keep_in_fp32(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Make the modules ``names`` (as in ``model.named_modules()``) run in fp32 under autocast.

    Each one's ``forward`` is wrapped: when autocast is on for the input's device, the wrapper
    turns it off and casts bf16/fp16 tensor arguments to fp32. Outputs stay fp32; the layers after
    them accept that under autocast (convs cast to the reduced type, ``cat`` and ``+`` promote to
    fp32). Without autocast nothing changes. The wrapper is a ``functools.partial`` on the module,
    so ``copy.deepcopy``, pickling and ``torch.compile`` keep it; ``state_dict`` keys do not
    change. Idempotent; returns ``model``, changed in place.
    """
    modules = dict(model.named_modules())
    names = list(dict.fromkeys(names))
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise KeyError(f"no such modules in {type(model).__name__}: {', '.join(unknown)}")
    for name in names:
        module = modules[name]
        if _INNER not in module.__dict__:
            # an instance-level forward (another wrapper) is kept; the class's is looked up at call
            # time, so that copies and unpickled models call their own
            setattr(module, _INNER, module.__dict__.get("forward"))
            module.forward = partial(_fp32_forward, module)
    return model


def _fp32_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    import torch

    inner = getattr(module, _INNER) or partial(type(module).forward, module)
    device = _device_type(torch, (args, kwargs))
    if device is None or not _autocast_enabled(torch, device):
        return inner(*args, **kwargs)
    with torch.autocast(device, enabled=False):
        return inner(*_to_fp32(torch, args), **_to_fp32(torch, kwargs))


def _autocast_enabled(torch: Any, device: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device))
    except TypeError:  # torch < 2.4 takes no device
        return bool(torch.is_autocast_cpu_enabled() if device == "cpu" else torch.is_autocast_enabled())


def _device_type(torch: Any, value: Any) -> str | None:
    """The device type of the first tensor in (nested) arguments."""
    if isinstance(value, torch.Tensor):
        return value.device.type
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        device = _device_type(torch, item)
        if device is not None:
            return device
    return None


def _to_fp32(torch: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, tuple):
        return tuple(_to_fp32(torch, item) for item in value)
    if isinstance(value, list):
        return [_to_fp32(torch, item) for item in value]
    if isinstance(value, dict):
        return {key: _to_fp32(torch, item) for key, item in value.items()}
    return value
