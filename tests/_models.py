"""Parameter counting shared by the model tests."""

from __future__ import annotations

from torch import nn


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
