"""Typed access to a BatchNorm's running statistics (torch types them as optional)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["running_stats"]


def running_stats(bn: nn.modules.batchnorm._BatchNorm
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """A BatchNorm's running mean, variance and update count, or None if it keeps none."""
    mean, var, count = bn.running_mean, bn.running_var, bn.num_batches_tracked
    if mean is None or var is None or count is None:
        return None
    return mean, var, count
