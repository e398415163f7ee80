"""Small networks shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


class TanhNet(nn.Module):
    """A smooth one-hidden-layer body ``(n, d) -> (n, h)`` (finite differences need no ReLU
    kinks)."""

    def __init__(self, d: int = 4, h: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(d, h)
        self.out_features = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x))


def linear_backbone(d: int = 6, side: int = 8) -> nn.Module:
    """A float64 linear body of ``side x side`` one-channel images, seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, d)).double()
