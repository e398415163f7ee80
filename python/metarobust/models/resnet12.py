"""The standard few-shot ResNet-12 (Lee et al. 2019 MetaOptNet; Oreshkin et al. 2018 TADAM).

Four residual blocks; each is three [3x3 conv, BatchNorm, LeakyReLU(0.1)] (the last
activation after the residual sum), a 1x1 conv + BatchNorm shortcut, and a 2x2 max-pool.
Widths (64, 160, 320, 640), then a global average pool: 640-d features at any input size
of at least 16x16. DropBlock, used by some papers, is left out.

>>> import torch
>>> net = resnet12(in_channels=3)
>>> net(torch.zeros(2, 3, 84, 84)).shape
torch.Size([2, 640])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .conv4 import _check_ints, _check_parameters, _check_positive

__all__ = ["ResNet12", "resnet12"]


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, slope: float = 0.1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, cout), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3(cout, cout), nn.BatchNorm2d(cout)
        self.conv3, self.bn3 = _conv3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.LeakyReLU(slope)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.act(out + self.shortcut(x)))


class ResNet12(nn.Module):
    """ResNet-12 backbone: ``(N, C, H, W)`` to ``(N, widths[-1])``."""

    def __init__(self, in_channels: int = 3, image_size: int = 84,
                 widths: Sequence[int] = (64, 160, 320, 640)) -> None:
        super().__init__()
        in_channels = _check_positive(in_channels, "in_channels")
        image_size = _check_positive(image_size, "image_size")
        widths = _check_ints(widths, "widths")
        if len(widths) != 4:
            raise ValueError(f"widths: expected 4 block widths, got {widths}")
        if image_size < 16:
            raise ValueError(f"image_size: ResNet-12 pools four times, needs >= 16, got "
                             f"{image_size}")
        chans = (in_channels, *widths)
        _check_parameters(sum((10 * a + 18 * b + 8) * b for a, b in zip(chans, widths)),
                          "in_channels, widths", "a ResNet-12")
        self.blocks = nn.Sequential(*(ResidualBlock(chans[i], chans[i + 1]) for i in range(4)))
        self.out_features = widths[-1]
        self.image_size = image_size
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu",
                                        a=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3))


def resnet12(in_channels: int = 3, image_size: int = 84,
             widths: Sequence[int] = (64, 160, 320, 640)) -> ResNet12:
    """The standard few-shot ResNet-12 (640-d features)."""
    return ResNet12(in_channels, image_size, widths)
