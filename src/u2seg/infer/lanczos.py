"""Pillow's Lanczos resize as two matrix products, so it runs on any torch device.

``PIL.Image.resize(size, Image.Resampling.LANCZOS)`` is a separable filter: two passes, each a
fixed linear map along one axis. Building those maps as dense
``out×in`` matrices from Pillow's *own* coefficients (``precompute_coeffs`` in
``libImaging/Resample.c``) lets a GPU do the resize with two matmuls and still give what Pillow
gives, which is what the official weights' users (rembg) feed the network.

Details copied from Pillow on purpose:

* the window of each output sample starts at ``int(center - support + 0.5)`` (C truncation) and
  holds ``int(center + support + 0.5) - xmin`` taps clipped to the image; the weights are
  ``lanczos((x + xmin - center + 0.5) / filterscale)`` normalised to sum 1;
* 8-bit images use fixed-point coefficients (``PRECISION_BITS = 22``, rounded half away from
  zero), round half up (``+ 1 << 21`` then an arithmetic shift) and clip to 0..255 after *each*
  pass, so the order of the passes shows in the result;
* the order: Pillow ≤ 12 always runs the horizontal pass first; Pillow 13 (python-pillow/Pillow
  #9549) runs the vertical pass first when the height loses more than twice as many pixels as
  the width (``in_h - out_h > 0 and in_h - out_h > 2 * (in_w - out_w)``), for speed;
* mode ``F`` uses the double coefficients and stores the intermediate image as float32;
* an axis whose size does not change is not filtered at all.

torch is imported inside the functions: u2seg keeps torch optional at import time.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "PassOrder", "horizontal_first", "lanczos_matrix", "resize_image_tensor", "resize_map_tensor",
]

_SUPPORT = 3.0  # Lanczos-3
_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit images

PassOrder = Literal["installed", "pillow13", "horizontal"]


@functools.lru_cache(maxsize=1)
def _installed_pillow_is_13() -> bool:
    from PIL import __version__

    return int(__version__.split(".")[0]) >= 13


def horizontal_first(
    in_size: tuple[int, int], out_size: tuple[int, int], pass_order: PassOrder = "installed"
) -> bool:
    """Whether Pillow filters along the width before the height for this (width, height) pair.

    ``"horizontal"`` is Pillow ≤ 12 (always); ``"pillow13"`` is Pillow 13's rule; ``"installed"``
    follows the Pillow found at run time, so results match the ``Image.resize`` beside them.
    """
    if pass_order == "installed":
        pass_order = "pillow13" if _installed_pillow_is_13() else "horizontal"
    if pass_order == "horizontal":
        return True
    if pass_order != "pillow13":
        raise ValueError(f"pass_order: installed, pillow13 or horizontal, not {pass_order!r}")
    shrink_h = in_size[1] - out_size[1]
    return not (shrink_h > 0 and shrink_h > (in_size[0] - out_size[0]) * 2)


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's ``lanczos_filter``: sinc(x)·sinc(x/3) on the half-open ``[-3, 3)``."""

    def sinc(v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = v * math.pi  # same operation order as the C code: x *= M_PI; sin(x) / x
            return np.where(v == 0.0, 1.0, np.sin(t) / t)

    return np.where((x >= -_SUPPORT) & (x < _SUPPORT), sinc(x) * sinc(x / 3.0), 0.0)


@functools.lru_cache(maxsize=64)
def lanczos_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The float64 ``out_size×in_size`` matrix of Pillow's Lanczos weights for one axis.

    Row ``i`` holds the (normalised, double) coefficients Pillow uses for output sample ``i``;
    ``M @ signal`` is Pillow's resize of a 1-D float signal. Dense (fine for network-sized
    outputs, GPU friendly), cached and read-only, because the same few sizes come back.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} → {out_size}")
    scale = in_size / out_size  # box = whole axis, so in1 - in0 = in_size exactly
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv_filterscale = 1.0 / filterscale

    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    # (int) in C truncates toward zero; negatives are clamped to 0 right after anyway.
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize, dtype=np.int64)
    valid = taps[None, :] < xmax[:, None]
    index = xmin[:, None] + taps[None, :]
    weights = _lanczos(((index - center[:, None]) + 0.5) * inv_filterscale)
    weights = np.where(valid, weights, 0.0)
    # C sums the taps left to right; cumsum is sequential, so the total is the same double.
    total = np.cumsum(weights, axis=1)[:, -1]
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0.0)

    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], index.shape)
    matrix[rows[valid], index[valid]] = weights[valid]
    matrix.flags.writeable = False
    return matrix


@functools.lru_cache(maxsize=64)
def _fixed_point_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The coefficients Pillow's 8-bit path really uses: ``int(±0.5 + k·2²²)``, scaled back.

    Values are ``n / 2**22`` with ``|n| < 2**23``, so they are exact in float32.
    """
    scaled = lanczos_matrix(in_size, out_size) * float(1 << _PRECISION_BITS)
    fixed = np.trunc(np.where(scaled < 0, scaled - 0.5, scaled + 0.5)) / float(1 << _PRECISION_BITS)
    fixed.flags.writeable = False
    return fixed


@functools.lru_cache(maxsize=32)
def _device_matrix(in_size: int, out_size: int, fixed_point: bool, device: Any) -> torch.Tensor:
    """One axis' matrix as a float32 tensor on ``device`` (cached: built once per size pair)."""
    import torch

    source = _fixed_point_matrix if fixed_point else lanczos_matrix
    return torch.from_numpy(source(in_size, out_size).astype(np.float32)).to(device)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"size must be (width, height) with positive values, got {size!r}")
    return width, height


def _resize(
    values: torch.Tensor, width: int, height: int, uint8_passes: bool, pass_order: PassOrder
) -> torch.Tensor:
    """Both passes in Pillow's order; each rounded and clipped like Pillow when ``uint8_passes``."""
    import torch

    out = values.to(torch.float32)

    def settle(x: torch.Tensor) -> torch.Tensor:
        # Pillow: clip8((sum + (1 << 21)) >> 22), i.e. floor(v + 0.5) clipped to 0..255.
        return torch.floor(x + 0.5).clamp_(0.0, 255.0) if uint8_passes else x

    def horizontal(x: torch.Tensor) -> torch.Tensor:
        if width == x.shape[-1]:
            return x
        return settle(torch.matmul(x, _device_matrix(x.shape[-1], width, uint8_passes, x.device).T))

    def vertical(x: torch.Tensor) -> torch.Tensor:
        if height == x.shape[-2]:
            return x
        return settle(torch.matmul(_device_matrix(x.shape[-2], height, uint8_passes, x.device), x))

    in_size = (out.shape[-1], out.shape[-2])
    if horizontal_first(in_size, (width, height), pass_order):
        out = vertical(horizontal(out))
    else:
        out = horizontal(vertical(out))
    if out is values:  # nothing to do: hand back a copy, as Pillow does
        out = out.clone()
    return out


def resize_image_tensor(
    image: torch.Tensor,
    size: tuple[int, int],
    *,
    uint8_passes: bool = True,
    pass_order: PassOrder = "installed",
) -> torch.Tensor:
    """Lanczos-resize a ``C×H×W`` or ``N×C×H×W`` image (uint8, or float in 0..255) to ``size``.

    ``size`` is (width, height), as for Pillow. Returns float32 on the image's device. With
    ``uint8_passes`` each pass is rounded and clipped to 0..255 with Pillow's fixed-point
    coefficients, so the result holds the integers Pillow's 8-bit resize gives (rarely one off,
    from float32 accumulation); without it both passes stay in float (no rounding, no clipping).
    ``pass_order`` picks which Pillow's order of passes to copy (see :func:`horizontal_first`).
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"expected a C×H×W or N×C×H×W tensor, got shape {tuple(image.shape)}")
    width, height = _check_size(size)
    return _resize(image, width, height, uint8_passes, pass_order)


def resize_map_tensor(
    values: torch.Tensor, size: tuple[int, int], *, pass_order: PassOrder = "installed"
) -> torch.Tensor:
    """Lanczos-resize a float ``H×W`` or ``N×H×W`` map to ``size`` = (width, height).

    Matches Pillow's mode ``F`` resize (double coefficients, float32 between the passes) to
    float32 rounding; returns float32 on the map's device.
    """
    if values.ndim not in (2, 3):
        raise ValueError(f"expected an H×W or N×H×W tensor, got shape {tuple(values.shape)}")
    width, height = _check_size(size)
    return _resize(values, width, height, False, pass_order)
