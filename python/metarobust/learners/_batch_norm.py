"""Per-task BatchNorm statistics for a forward over several tasks at once."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from ..models.batchnorm import running_stats

__all__ = ["task_batch_norm"]


def _grouped_bn(module: nn.modules.batchnorm._BatchNorm, groups: int, x: torch.Tensor):
    """BatchNorm with statistics of each of ``groups`` equal slices of the batch.

    Same result as running the module on each slice in turn: normalisation by the slice's
    own biased variance, and running statistics updated once per slice, in order.
    """
    n = x.shape[0]
    if groups <= 1 or n % groups:
        return vars(module)["_orig_forward"](x)
    xs = x.reshape(groups, n // groups, *x.shape[1:])
    dims = (1, *range(3, xs.dim()))
    mean = xs.mean(dim=dims, keepdim=True)
    var = xs.var(dim=dims, unbiased=False, keepdim=True)
    y = (xs - mean) * torch.rsqrt(var + module.eps)
    shape = (1, 1, -1, *([1] * (xs.dim() - 3)))
    if module.affine:
        y = y * module.weight.reshape(shape) + module.bias.reshape(shape)
    stats = running_stats(module)
    if module.training and module.track_running_stats and stats is not None:
        running_mean, running_var, tracked = stats
        count = xs.numel() // (groups * xs.shape[2])
        with torch.no_grad():
            m = mean.reshape(groups, -1).detach()
            v = var.reshape(groups, -1).detach() * (count / max(count - 1, 1))
            for g in range(groups):
                tracked.add_(1)
                mom = (1.0 / float(tracked) if module.momentum is None else module.momentum)
                running_mean.mul_(1 - mom).add_(m[g].to(running_mean.dtype), alpha=mom)
                running_var.mul_(1 - mom).add_(v[g].to(running_var.dtype), alpha=mom)
    return y.reshape(x.shape)


@contextlib.contextmanager
def task_batch_norm(model: nn.Module, groups: int) -> Iterator[None]:
    """Within the block, BatchNorm layers of ``model`` that use batch statistics compute them
    over each of ``groups`` equal consecutive slices of the batch (one slice per task), so
    one forward over ``groups`` tasks never mixes their statistics."""
    if groups <= 1:  # plain BatchNorm already does it; leaving it unpatched suits torch.compile
        yield
        return
    patched = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                m.training or m.running_mean is None):
            # instance attributes shadow the class's forward until deleted
            vars(m)["_orig_forward"] = m.forward
            vars(m)["forward"] = functools.partial(_grouped_bn, m, groups)
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            del vars(m)["forward"]
            del vars(m)["_orig_forward"]
