"""The embedding network of Sung et al.'s Relation Networks (2018): four blocks of 3x3
convolution (``filters`` channels), BatchNorm and ReLU, with 2x2 max-pooling after the
first two only, returning the feature maps ``(N, filters, H/4, W/4)`` that the relation
module convolves (7x7 for 28x28 inputs; Sung et al. use unpadded first convolutions, 5x5).

>>> import torch
>>> net = conv4_sung(in_channels=1, image_size=28)
>>> net(torch.zeros(2, 1, 28, 28)).shape, net.out_features
(torch.Size([2, 64, 7, 7]), 3136)
"""

from __future__ import annotations

import torch
from torch import nn

from metarobust._checks import check_int

__all__ = ["Conv4Sung", "conv4_sung"]


class Conv4Sung(nn.Module):
    """Four conv blocks, pooling after the first two; outputs feature maps.

    Args:
        in_channels: image channels.
        image_size: side of the square input (>= 4); sets ``out_features``, the size of
            the flattened maps.
        filters: channels of every block.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, filters: int = 64) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", 1, 1 << 16)
        image_size = check_int(image_size, "image_size", 4, 1 << 16)
        filters = check_int(filters, "filters", 1, 1 << 12)
        blocks: list[nn.Module] = []
        for i in range(4):
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels if i == 0 else filters, filters, 3, padding=1),
                nn.BatchNorm2d(filters), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        side = image_size // 4
        self.out_shape = (filters, side, side)
        self.out_features = filters * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def conv4_sung(in_channels: int = 1, image_size: int = 28, filters: int = 64) -> Conv4Sung:
    """Sung et al.'s relation-network encoder: feature maps of ``filters`` channels."""
    return Conv4Sung(in_channels, image_size, filters)
