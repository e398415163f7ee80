"""The first block of a Conv-4 fused in Rust for CPU training, in both of its forms:

* pooling (Snell et al.; conv 3x3, BatchNorm, 2x2 max-pool, ReLU;
  :mod:`metarobust._core`'s ``conv_block_forward/backward``): unfused, it writes and reads
  back several full-resolution maps in each direction, a large share of a ProtoNet training
  step on a CPU; fused, nothing of full resolution is stored.
* strided (Finn et al.; conv 3x3 with stride 2, BatchNorm, ReLU;
  ``strided_block_forward/backward``): on the query set, a large share of a MAML step on a
  CPU; fused, it reads the images and writes its output once (NCHW), and its backward reads
  that output and its gradient once.

The block's BatchNorm must normalise with the batch's statistics (training mode, or no
running statistics as in MAML), and the fused path applies only where its shortcuts hold:
CPU float32 without autocast, an input that needs no gradient (data, not an attack's
variable), BatchNorm over the whole batch (one task per forward), no ``torch.compile``, not
inside :func:`disabled`. Elsewhere the block runs as usual. The fused blocks are differentiable
once: a graph whose gradient is differentiated again (second-order MAML's inner steps) must
be built inside :func:`disabled`, and trying otherwise raises an error rather than giving
wrong second derivatives.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TypeGuard

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from metarobust import _amp, _core
from metarobust.models.batchnorm import running_stats

__all__ = ["disabled", "fused_block", "fused_pool_block", "fused_strided_block"]

_STATE = threading.local()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Blocks called inside run through torch (in this thread): for graphs that will be
    differentiated twice, and for ``torch.func`` transforms."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def _tensor(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


class _PoolBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps):
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
    @once_differentiable
    def backward(ctx, dout, _mean, _var):
        x, weight, bias, gamma, beta, mean, var = ctx.saved_tensors
        dout = dout.permute(0, 2, 3, 1).contiguous()
        grads = _core.conv_block_backward(
            *(t.numpy() for t in (x, weight, bias, gamma, beta, mean, var)), ctx.eps,
            dout.numpy())
        gw, gb, gg, gbeta = (_tensor(g) for g in grads)
        return None, gw.view_as(weight), gb, gg, gbeta, None


class _StridedBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps, parallel):
        n, _, h, w = x.shape
        out = torch.empty(n, weight.shape[0], (h + 1) // 2, (w + 1) // 2)
        args = [t.detach().contiguous() for t in (x, weight, bias, gamma, beta)]
        mean, var = _core.strided_block_forward(*(a.numpy() for a in args), eps,
                                                out.numpy(), parallel)
        mean, var = _tensor(mean), _tensor(var)
        # The output's positive entries are the ReLU's mask: the backward needs nothing
        # else of full resolution (and the next convolution keeps the output anyway).
        ctx.save_for_backward(args[0], args[1], args[3], var, out)
        ctx.eps, ctx.parallel = eps, parallel
        ctx.mark_non_differentiable(mean, var)
        # NCHW, as torch's block: channels-last maps ran the next convolution faster, but
        # torch's channels-last ops at one thread (MAML's task threads) flip ReLU masks at
        # near-ties differently, which slowed MAML's training measurably.
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, _mean, _var):
        x, weight, gamma, var, out = ctx.saved_tensors
        gw, gg, gbeta = _core.strided_block_backward(
            *(t.numpy() for t in (x, weight, gamma, var)), ctx.eps, out.numpy(),
            dout.contiguous().numpy(), ctx.parallel)
        # A bias before a BatchNorm has no effect: its gradient is zero (torch's own is
        # rounding noise).
        return (None, _tensor(gw).view_as(weight), torch.zeros_like(gamma), _tensor(gg),
                _tensor(gbeta), None, None)


def _conv3x3(conv: nn.Module, stride: int) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
            and conv.stride == (stride, stride) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
            and conv.padding_mode == "zeros" and conv.weight.dtype == torch.float32
            and conv.weight.device.type == "cpu")


def _batch_stats_bn(bn: nn.Module) -> TypeGuard[nn.BatchNorm2d]:
    """A BatchNorm2d that normalises with the batch's statistics over the whole batch."""
    return (isinstance(bn, nn.BatchNorm2d) and bn.affine
            and (bn.training or bn.running_mean is None)
            and "forward" not in vars(bn))  # task_batch_norm's per-task statistics


def _applies(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and not x.requires_grad and not getattr(_STATE, "depth", 0)
            and not torch.compiler.is_compiling() and _amp.autocast_dtype("cpu") is None)


def _update_running_stats(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor,
                          count: int) -> None:
    """Updates ``bn``'s running statistics with a batch's, as torch's BatchNorm does."""
    stats = running_stats(bn)
    if not (bn.training and bn.track_running_stats and stats is not None):
        return
    running_mean, running_var, tracked = stats
    with torch.no_grad():
        tracked.add_(1)
        m = 1.0 / float(tracked) if bn.momentum is None else float(bn.momentum)
        running_mean.mul_(1 - m).add_(mean, alpha=m)
        running_var.mul_(1 - m).add_(var * (count / max(count - 1, 1)), alpha=m)



def fused_pool_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``block(x)`` for a training-mode ``[Conv2d 3x3, BatchNorm2d, MaxPool2d(2), ReLU]``
    block through the fused kernels (updating the BatchNorm's running statistics as torch
    does), or None where the fused path does not apply."""
    if not (isinstance(block, nn.Sequential) and len(block) == 4 and _applies(x)):
        return None
    conv, bn, pool, relu = block
    if not (_conv3x3(conv, 1) and _batch_stats_bn(bn) and bn.training
            and isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1))
            and not (pool.ceil_mode and (x.shape[2] % 2 or x.shape[3] % 2))  # floor == ceil
            and isinstance(relu, nn.ReLU) and x.shape[2] >= 2 and x.shape[3] >= 2):
        return None
    out, mean, var = _PoolBlock.apply(x, conv.weight, conv.bias, bn.weight, bn.bias,
                                      float(bn.eps))
    _update_running_stats(bn, mean, var, x.shape[0] * x.shape[2] * x.shape[3])
    return out


def fused_strided_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``block(x)`` for a ``[Conv2d 3x3 stride 2, BatchNorm2d, ReLU]`` block whose BatchNorm
    uses batch statistics, through the fused kernels (updating running statistics, if the
    BatchNorm keeps them, as torch does), or None where the fused path does not apply. The
    kernels use torch's thread count: one thread (MAML's task threads) keeps them on the
    calling thread."""
    if not (isinstance(block, nn.Sequential) and len(block) == 3 and _applies(x)):
        return None
    conv, bn, relu = block
    if not (_conv3x3(conv, 2) and _batch_stats_bn(bn) and isinstance(relu, nn.ReLU)):
        return None
    out, mean, var = _StridedBlock.apply(x, conv.weight, conv.bias, bn.weight, bn.bias,
                                         float(bn.eps), torch.get_num_threads() > 1)
    _update_running_stats(bn, mean, var, out.shape[0] * out.shape[2] * out.shape[3])
    return out


def fused_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``block(x)`` through whichever fused block matches it, or None."""
    out = fused_pool_block(block, x)
    return fused_strided_block(block, x) if out is None else out
