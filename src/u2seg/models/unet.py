"""The plain U-Net of the project's source material, with the same output contract as U²-Net.

Four down-sampling levels (64 … 1024 channels); each level is two 3x3 conv → BN → dropout →
LeakyReLU; down-sampling is a stride-2 3x3 conv; up-sampling is nearest-neighbour, a 1x1 conv that
halves the channels, then concatenation with the skip. ``forward`` returns a 1-tuple of logits so
that code written for U²-Net's tuple of outputs works unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet"]


class ConvBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, dropout: float) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_ch, out_ch):
            layers += [nn.Conv2d(c_in, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                       nn.Dropout2d(dropout), nn.LeakyReLU()]
        super().__init__(*layers)


class DownSample(nn.Sequential):
    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.LeakyReLU())


class UpSample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # Nearest to the skip's exact size (not a fixed ×2) so odd input sizes work.
        up = F.interpolate(x, size=skip.shape[2:], mode="nearest")
        return torch.cat((self.conv(up), skip), 1)


class UNet(nn.Module):
    def __init__(self, *, num_classes: int = 1, in_channels: int = 3, base_channels: int = 64,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        widths = [base_channels * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        c_in = in_channels
        for i, w in enumerate(widths):
            self.encoders.append(ConvBlock(c_in, w, dropout))
            if i < len(widths) - 1:
                self.downs.append(DownSample(w))
            c_in = w
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w in reversed(widths[1:]):
            self.ups.append(UpSample(w))
            self.decoders.append(ConvBlock(w, w // 2, dropout))
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < len(self.downs):
                skips.append(x)
                x = self.downs[i](x)
        for up, decoder in zip(self.ups, self.decoders):
            x = decoder(up(x, skips.pop()))
        return (self.head(x),)
