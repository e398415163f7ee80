"""Reptile (Nichol et al., 2018): first-order meta-learning by parameter interpolation.

For each task ``i`` of a meta-batch, ``inner_steps`` steps of gradient descent (rate
``inner_lr``) on the task's data from the meta-parameters ``theta`` give ``phi_i``; the
meta-update moves ``theta`` towards their mean, ``theta <- theta + eps (mean_i phi_i -
theta)``. :meth:`Reptile.meta_backward` writes ``theta - mean_i phi_i`` into the
parameters' ``.grad``: one step of plain SGD with learning rate ``eps`` is then exactly the
interpolation (the trainer gives Reptile that optimiser, see ``outer_optimizer``). Reptile
has no held-out query set in meta-training: the inner loop trains on the whole episode,
support and query items together, as the paper's algorithm trains on the task.

Evaluation, ``predict`` and the call are :class:`~metarobust.learners.MAML`'s: adaptation
on the support set with ``test_inner_steps`` steps, then the query logits. Tasks of a
meta-batch run on MAML's paths (``vmap``, ``loop``, ``threads``), BatchNorm per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..models import fused
from ._variable import refuse_variable
from .base import check_batch, slice_batch
from .maml import _WORKER, MAML, Params, _decomposed_batch_norm

__all__ = ["Reptile"]


class Reptile(MAML):
    """Reptile around a backbone with a linear head.

    Args:
        model: the backbone ``(N, ...) -> (N, ...)`` (BatchNorm converted as MAML does).
        ways: the classes of every task.
        inner_lr: the inner loop's SGD step size.
        inner_steps: inner steps per task in meta-training.
        test_inner_steps: steps on the support set in evaluation (default: inner_steps).
        input_shape, path, normalize, chunk_size, fuse_first_block: as
            :class:`~metarobust.learners.MAML`.
    """

    #: the trainer's optimiser: plain SGD on ``theta - mean(phi)`` is the interpolation
    outer_optimizer = "sgd"

    def __init__(self, model: nn.Module, inner_lr: float = 0.1, inner_steps: int = 5,
                 test_inner_steps: int | None = None, *, ways: int | None = None,
                 input_shape: Sequence[int] | None = None, path: str = "auto",
                 normalize: Sequence[Any] | None = None, chunk_size: int | None = None,
                 fuse_first_block: bool = True) -> None:
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         test_inner_steps=test_inner_steps, order="first", variant="maml",
                         ways=ways, path=path, input_shape=input_shape, normalize=normalize,
                         chunk_size=chunk_size, fuse_first_block=fuse_first_block)

    def _adapt(self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
               functional: bool) -> tuple[Params, torch.Tensor, torch.Tensor]:
        """One task's adapted parameters after ``inner_steps`` SGD steps on ``(x, y)``, and
        the adapted network's loss and accuracy on them."""
        net = getattr(_WORKER, "nets", {}).get(id(self), self.net)

        def inner_loss(p: Params, x: torch.Tensor) -> torch.Tensor:
            return self._loss(functional_call(net, (p, buffers), (x,)), y)

        fast = dict(params)
        for _ in range(self.inner_steps):
            grads = self._inner_grads(inner_loss, fast, x, True, functional)
            fast = {n: (fast[n] - self.inner_lr * g).detach()
                    for n, g in zip(self._fast_names, grads)}
        with torch.no_grad():
            out = functional_call(net, (fast, buffers), (x,))
            loss, acc = self._task_losses(out[None], y[None])
        return fast, loss[0], acc[0]

    def _adapt_chunk(self, chunk: Any, ways: int) -> tuple[Params, torch.Tensor,
                                                           torch.Tensor]:
        """The adapted parameters of every task of a chunk, stacked ``(c, ...)``, with the
        tasks' losses and accuracies."""
        sx, sy, qx = self._inputs(chunk, ways)
        x, y = torch.cat([sx, qx], 1), torch.cat([sy, chunk.query_y], 1)
        params = {k: v.detach() for k, v in self.net.named_parameters()}
        buffers = dict(self.net.named_buffers())
        if self._use_vmap(x):
            with _decomposed_batch_norm(self.net), fused.disabled():
                return vmap(lambda x, y: self._adapt(params, buffers, x, y, True))(x, y)
        workers = self._task_threads(x, x.shape[0])
        if workers:
            done = self._map_tasks(lambda i: self._adapt(params, buffers, x[i], y[i], False),
                                   x.shape[0], workers)
        else:
            done = [self._adapt(params, buffers, x[i], y[i], False) for i in range(x.shape[0])]
        stacked = {n: torch.stack([d[0][n] for d in done]) for n in self._fast_names}
        return (stacked, torch.stack([d[1] for d in done]), torch.stack([d[2] for d in done]))

    def meta_backward(self, batch: Any, ways: int | None, *,
                      sync: bool = True) -> dict[str, Any]:
        """Adds ``theta - mean_i phi_i`` to each parameter's ``.grad`` (the Reptile
        direction; see the module docstring) and returns the adapted networks' mean loss
        and accuracy on their episodes."""
        refuse_variable(self, batch)
        check_batch(batch)
        if not torch.is_grad_enabled():
            raise RuntimeError("meta_backward: gradients are disabled (called under "
                               "torch.no_grad()); use evaluate_batch to evaluate")
        ways = self._check_batch(batch, ways, labels=sync)
        assert ways is not None  # a classifier: MAML's checks
        b = batch.support_x.shape[0]
        params = dict(self.net.named_parameters())
        total = {n: torch.zeros_like(params[n]) for n in self._fast_names}
        loss_sum: Any = 0.0
        acc_sum: Any = 0.0
        for start, stop in self._chunks(b, batch.support_x):
            phi, loss, acc = self._adapt_chunk(slice_batch(batch, start, stop), ways)
            for n in self._fast_names:
                total[n] += phi[n].sum(0)
            loss_sum, acc_sum = loss_sum + loss.sum(), acc_sum + acc.sum()
        for n in self._fast_names:
            p = params[n]
            step = p.detach() - total[n] / b
            p.grad = step if p.grad is None else p.grad.add_(step)
        means = {"loss": loss_sum / b, "accuracy": acc_sum / b}
        return {k: float(v) for k, v in means.items()} if sync else means

    def _default_chunk(self, x: torch.Tensor) -> int | None:
        # no graph is kept across tasks: the whole batch at once on every path
        return None
