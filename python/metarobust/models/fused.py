"""The first block of a pooling Conv-4 (conv 3x3, BatchNorm, 2x2 max-pool, ReLU) fused in
Rust for CPU training (:mod:`metarobust._core`'s ``conv_block_forward/backward``).

Unfused, that block writes and reads back several full-resolution maps in each direction
(for a 20-way 1-shot 5-query Omniglot episode, 24 MB each) and is about half of a ProtoNet
training step on a CPU; fused, nothing of full resolution is stored. It applies only where
its shortcuts hold: training mode (batch statistics), CPU float32, an input that needs no
gradient (data, not an attack's variable), BatchNorm over the whole batch (one task per
forward), no ``torch.compile``. Elsewhere the block runs as usual.
"""

from __future__ import annotations

import torch
from torch import nn

from metarobust import _core

__all__ = ["fused_pool_block"]


class _PoolBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps):  # type: ignore[override]
        n, _, h, w = x.shape
        out = torch.empty(n, h // 2, w // 2, weight.shape[0])
        args = [t.detach().contiguous() for t in (x, weight, bias, gamma, beta)]
        mean, var = _core.conv_block_forward(*(a.numpy() for a in args), eps, out.numpy())
        mean, var = torch.tensor(mean), torch.tensor(var)
        ctx.save_for_backward(*args, mean, var)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        # Channels last in memory, as the following blocks run.
        return out.permute(0, 3, 1, 2), mean, var

    @staticmethod
    def backward(ctx, dout, _mean, _var):  # type: ignore[override]
        x, weight, bias, gamma, beta, mean, var = ctx.saved_tensors
        dout = dout.permute(0, 2, 3, 1).contiguous()
        grads = _core.conv_block_backward(
            *(t.numpy() for t in (x, weight, bias, gamma, beta, mean, var)), ctx.eps,
            dout.numpy())
        gw, gb, gg, gbeta = (torch.tensor(g) for g in grads)
        return None, gw.view_as(weight), gb, gg, gbeta, None


def _fusable(block: nn.Module, x: torch.Tensor) -> bool:
    if not (isinstance(block, nn.Sequential) and len(block) == 4):
        return False
    conv, bn, pool, relu = block
    return (
        isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
        and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
        and conv.bias is not None and conv.padding_mode == "zeros"
        and isinstance(bn, nn.BatchNorm2d) and bn.training and bn.affine
        and "forward" not in vars(bn)  # task_batch_norm's per-task statistics
        and isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2))
        and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
        and isinstance(relu, nn.ReLU)
        and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
        and x.shape[2] >= 2 and x.shape[3] >= 2 and not x.requires_grad
        and conv.weight.dtype == torch.float32 and conv.weight.device.type == "cpu"
        and not torch.compiler.is_compiling()
    )


def fused_pool_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``block(x)`` for a training-mode ``[Conv2d 3x3, BatchNorm2d, MaxPool2d(2), ReLU]``
    block through the fused kernels (updating the BatchNorm's running statistics as torch
    does), or None where the fused path does not apply."""
    if not _fusable(block, x):
        return None
    conv, bn = block[0], block[1]
    eps = float(bn.eps)
    out, mean, var = _PoolBlock.apply(x, conv.weight, conv.bias, bn.weight, bn.bias, eps)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = (1.0 / float(bn.num_batches_tracked) if bn.momentum is None
                 else float(bn.momentum))
            count = x.shape[0] * x.shape[2] * x.shape[3]
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var * (count / max(count - 1, 1)), alpha=m)
    return out
