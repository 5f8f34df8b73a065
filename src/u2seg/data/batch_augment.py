"""Augmentation of whole batches on the device, with torch ops (CUDA or CPU tensors alike): the
random crop, flips, colour jitter and normalisation of ``official_train``, applied to ``uint8``
images that were decoded and resized once (:mod:`.cache`).

A :class:`BatchPlan` is what a transform that can run this way carries (``transform.batch_plan``).
Its random draws are the ones albumentations makes for the same transform on the per-sample path
(:class:`~u2seg.data.transforms.JointTransform`, restarted at the sample's seed with
``reseed``), in the same order from the same ``random.Random(seed)``:

1. the ``Compose``'s own probability (one draw, always);
2. ``RandomCrop`` (when ``crop < size``): ``h``, ``w``; top ``int((size − crop + 1)·h)``, left alike;
3. ``HorizontalFlip`` then ``VerticalFlip`` (when their p is in (0, 1)): one draw each, ``< p``;
4. :class:`~u2seg.data.colour.ColourJitter` (when configured): one draw for its p (when in
   (0, 1)), then, when it applies, the brightness, contrast and saturation factors.

So a batch made here equals, up to float rounding, the stack of the per-sample items with the
same seeds (``tests/test_data_cache.py`` checks it).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch

from .colour import JitterSpec, jitter_factors, jitter_torch

if TYPE_CHECKING:
    from .transforms import ImageNorm

__all__ = ["BatchPlan", "Draw"]


class Draw(NamedTuple):
    """One sample's random choices."""

    top: int
    left: int
    hflip: bool
    vflip: bool
    jitter: tuple[float, float, float] | None  # (brightness, contrast, saturation) factors, None: not applied


def _chance(rng: random.Random, p: float) -> bool:
    """albumentations' ``should_apply``: no draw for p ≤ 0 or p ≥ 1."""
    if p <= 0.0:
        return False
    if p >= 1.0:
        return True
    return rng.random() < p


@dataclass(frozen=True)
class BatchPlan:
    """Resize to ``size×size`` (once, into the cache), then per step: a random ``crop×crop`` crop
    (None: none), flips with ``flip_p`` / ``vflip_p``, colour ``jitter``, ``norm``."""

    size: int
    resample: str
    crop: int | None
    flip_p: float
    vflip_p: float
    norm: ImageNorm
    jitter: JitterSpec | None = None

    @property
    def out_size(self) -> int:
        return self.crop if self.crop is not None else self.size

    def draw(self, seed: int) -> Draw:
        """The random choices for the sample with augmentation ``seed`` (see the module's doc)."""
        rng = random.Random(seed)
        rng.random()  # the Compose's own probability
        top = left = 0
        if self.crop is not None and self.crop < self.size:
            room = self.size - self.crop + 1
            h, w = rng.random(), rng.random()
            top, left = int(room * h), int(room * w)
        hflip = _chance(rng, self.flip_p)
        vflip = _chance(rng, self.vflip_p)
        factors = None
        if self.jitter is not None and _chance(rng, self.jitter.p):
            factors = jitter_factors(rng, self.jitter)
        return Draw(top, left, hflip, vflip, factors)

    def apply(self, images: torch.Tensor, masks: torch.Tensor, draws: list[Draw], *,
              binary: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``uint8 N×S×S×3`` images and ``uint8 N×S×S`` masks (on any device) → the network
        input ``float32 N×3×C×C`` and the masks (binary: ``float32 N×1×C×C`` in {0, 1};
        multi-class: ``int64 N×C×C``), as the per-sample transform and dataset make them."""
        device, c = images.device, self.out_size
        picked = torch.stack([self._window(images[i], d) for i, d in enumerate(draws)])
        label = torch.stack([self._window(masks[i], d) for i, d in enumerate(draws)])
        x = torch.empty((len(draws), 3, c, c), dtype=torch.float32, device=device)
        if self.jitter is not None:
            x.copy_(jitter_torch(picked.float(), [d.jitter for d in draws]).permute(0, 3, 1, 2))
        else:
            x.copy_(picked.permute(0, 3, 1, 2))  # to NCHW float32 in one pass
        # the arithmetic of ImageNorm, in its order: equal results, not just close ones
        if self.norm.input_norm == "max":
            scale = x.amax(dim=(1, 2, 3), keepdim=True)
            x.div_(torch.where(scale > 0, scale, torch.ones_like(scale)))  # all black stays 0, not NaN
        else:
            x.div_(255.0)
        x.sub_(torch.tensor(self.norm.mean, dtype=torch.float32, device=device)[None, :, None, None])
        x.div_(torch.tensor(self.norm.std, dtype=torch.float32, device=device)[None, :, None, None])
        if binary:
            return x, label[:, None].float()
        return x, label.long()

    def _window(self, pixels: torch.Tensor, draw: Draw) -> torch.Tensor:
        """One sample's crop (a view), flipped as drawn (a copy; the stack copies views)."""
        c = self.out_size
        window = pixels[draw.top:draw.top + c, draw.left:draw.left + c]
        if draw.hflip:
            window = window.flip(1)
        if draw.vflip:
            window = window.flip(0)
        return window
