"""U²-Net (Qin et al., Pattern Recognition 2020): a U-structure of ReSidual U-blocks.

Every block is built from one REBNCONV (conv 3x3 + BN + ReLU). RSU-L blocks of any depth L come
from one class, and the full model is a configuration of stages, so ``u2net`` and ``u2netp`` are
data, not code. Module names and creation order follow the official release so its checkpoints
load unchanged, and the forward pass runs modules in the official order so fused ONNX exports map
onto them conv by conv.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REBNCONV", "RSU", "RSU4F", "StageSpec", "U2NetConfig", "U2Net", "U2NET_CONFIGS"]


class REBNCONV(nn.Module):
    """3x3 conv (optionally dilated) → BatchNorm → ReLU. Names as in the official code."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def upsample_like(src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``src`` to ``target``'s spatial size (align_corners=False, as official)."""
    if src.shape[2:] == target.shape[2:]:
        return src
    return F.interpolate(src, size=target.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """ReSidual U-block of depth ``depth`` (RSU-7 … RSU-4): a small U-Net with a residual.

    Encoder: ``rebnconv1 … rebnconv{L-1}`` with ceil-mode 2x2 max-pooling between them, then a
    dilation-2 ``rebnconv{L}`` at the bottom; decoder ``rebnconv{L-1}d … rebnconv1d`` on the
    concatenation with the skip, upsampled bilinearly to the skip's exact size.
    """

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"RSU depth must be at least 3, got {depth}")
        self.depth = depth
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        # Registration order mirrors the official __init__ so state_dict keys come out in order.
        self.add_module("rebnconv1", REBNCONV(out_ch, mid_ch))
        for i in range(1, depth - 1):
            self.add_module(f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            self.add_module(f"rebnconv{i + 1}", REBNCONV(mid_ch, mid_ch))
        self.add_module(f"rebnconv{depth}", REBNCONV(mid_ch, mid_ch, dirate=2))
        for i in range(depth - 1, 1, -1):
            self.add_module(f"rebnconv{i}d", REBNCONV(mid_ch * 2, mid_ch))
        self.add_module("rebnconv1d", REBNCONV(mid_ch * 2, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        skips = [self.rebnconv1(hxin)]
        for i in range(1, self.depth - 1):
            pooled = getattr(self, f"pool{i}")(skips[-1])
            skips.append(getattr(self, f"rebnconv{i + 1}")(pooled))
        hx = getattr(self, f"rebnconv{self.depth}")(skips[-1])
        for i in range(self.depth - 1, 0, -1):
            skip = skips[i - 1]
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((upsample_like(hx, skip), skip), 1))
        return hx + hxin


class RSU4F(nn.Module):
    """RSU-4F: the RSU-4 shape with dilations (1, 2, 4, 8) instead of pooling (low resolution)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, dirate=1)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, dirate=2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, dirate=4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, dirate=8)
        self.rebnconv3d = REBNCONV(mid_ch * 2, mid_ch, dirate=4)
        self.rebnconv2d = REBNCONV(mid_ch * 2, mid_ch, dirate=2)
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, dirate=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        hx1d = self.rebnconv1d(torch.cat((hx2d, hx1), 1))
        return hx1d + hxin


@dataclass(frozen=True)
class StageSpec:
    """One stage: an RSU of ``depth`` (``dilated=True`` for RSU-4F) with mid/out channels."""

    depth: int
    mid: int
    out: int
    dilated: bool = False

    def build(self, in_ch: int) -> nn.Module:
        if self.dilated:
            return RSU4F(in_ch, self.mid, self.out)
        return RSU(self.depth, in_ch, self.mid, self.out)


@dataclass(frozen=True)
class U2NetConfig:
    """Six encoder stages and five decoder stages (stage5d … stage1d); input channels derive."""

    encoder: tuple[StageSpec, ...]
    decoder: tuple[StageSpec, ...]
    description: str = field(default="", compare=False)


def _f(mid: int, out: int) -> StageSpec:
    return StageSpec(4, mid, out, dilated=True)


U2NET_CONFIGS: dict[str, U2NetConfig] = {
    "u2net": U2NetConfig(
        encoder=(StageSpec(7, 32, 64), StageSpec(6, 32, 128), StageSpec(5, 64, 256),
                 StageSpec(4, 128, 512), _f(256, 512), _f(256, 512)),
        decoder=(_f(256, 512), StageSpec(4, 128, 256), StageSpec(5, 64, 128),
                 StageSpec(6, 32, 64), StageSpec(7, 16, 64)),
        description="U²-Net, the full model (44.0 M parameters)",
    ),
    "u2netp": U2NetConfig(
        encoder=(StageSpec(7, 16, 64), StageSpec(6, 16, 64), StageSpec(5, 16, 64),
                 StageSpec(4, 16, 64), _f(16, 64), _f(16, 64)),
        decoder=(_f(16, 64), StageSpec(4, 16, 64), StageSpec(5, 16, 64),
                 StageSpec(6, 16, 64), StageSpec(7, 16, 64)),
        description="U²-Net-P, the small model (1.13 M parameters)",
    ),
}


class U2Net(nn.Module):
    """U²-Net returning seven logits ``(d0 fused, d1, …, d6)``, each N×C×H×W at the input size.

    ``num_classes > 1`` gives PaddleSeg-style heads: 3x3 side convs to ``num_classes`` channels and
    a 1x1 fusion over ``6 * num_classes``. Probabilities are ``sigmoid`` (one class) or
    ``softmax`` over channels (several).
    """

    def __init__(self, config: U2NetConfig, *, num_classes: int = 1, in_channels: int = 3) -> None:
        super().__init__()
        if len(config.encoder) != 6 or len(config.decoder) != 5:
            raise ValueError("a U2NetConfig needs 6 encoder and 5 decoder stages")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be ≥ 1, got {num_classes}, {in_channels}")
        self.config = config
        self.num_classes = num_classes
        self.in_channels = in_channels

        in_ch = in_channels
        for i, spec in enumerate(config.encoder, start=1):
            self.add_module(f"stage{i}", spec.build(in_ch))
            if i < 6:
                self.add_module(f"pool{i}{i + 1}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            in_ch = spec.out
        # Decoder stage i consumes the stage below it (upsampled) and encoder stage i.
        below = config.encoder[5].out
        decoder_out = {}
        for i, spec in zip(range(5, 0, -1), config.decoder):
            self.add_module(f"stage{i}d", spec.build(below + config.encoder[i - 1].out))
            decoder_out[i] = below = spec.out
        side_in = [decoder_out[i] for i in range(1, 6)] + [config.encoder[5].out]
        for i, ch in enumerate(side_in, start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, num_classes, 3, padding=1))
        self.outconv = nn.Conv2d(6 * num_classes, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoded = []
        hx = x
        for i in range(1, 7):
            if i > 1:
                hx = getattr(self, f"pool{i - 1}{i}")(hx)
            hx = getattr(self, f"stage{i}")(hx)
            encoded.append(hx)
        decoded = {6: encoded[5]}
        for i in range(5, 0, -1):
            skip = encoded[i - 1]
            hx = getattr(self, f"stage{i}d")(torch.cat((upsample_like(hx, skip), skip), 1))
            decoded[i] = hx
        d1 = self.side1(decoded[1])
        sides = [d1] + [upsample_like(getattr(self, f"side{i}")(decoded[i]), d1) for i in range(2, 7)]
        d0 = self.outconv(torch.cat(sides, 1))
        return (d0, *sides)
