"""metarobust.models.batchnorm: typed access to a BatchNorm's running statistics."""

from __future__ import annotations

import torch
from torch import nn

from metarobust.models.batchnorm import running_stats


def test_the_running_statistics_themselves():
    bn = nn.BatchNorm2d(3)
    mean, var, count = running_stats(bn)
    assert mean is bn.running_mean and var is bn.running_var and count is bn.num_batches_tracked
    bn.train()(torch.randn(4, 3, 2, 2))
    assert int(count) == 1 and not torch.equal(mean, torch.zeros(3))  # updated in place


def test_none_without_running_statistics():
    assert running_stats(nn.BatchNorm2d(3, track_running_stats=False)) is None
    assert running_stats(nn.BatchNorm1d(5, track_running_stats=False)) is None
