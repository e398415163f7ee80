"""Proto-MAML (Triantafillou et al., 2020): MAML whose linear head is not a meta-parameter
but is initialised, for each task, from the prototypes of its support set: for class ``k``
with mean support embedding ``c_k``, ``w_k = 2 c_k`` and ``b_k = -|c_k|^2``, so the
initial logits are the prototypical network's ``-|f(x) - c_k|^2`` up to a term common to
all classes. The inner loop then adapts the backbone and this head together. The
meta-gradient flows through the prototypes into the backbone; ``order="first"`` (the
default, Triantafillou et al.'s fo-Proto-MAML) treats the inner gradients as constants.
With no head among its parameters, one Proto-MAML takes tasks of any number of ways
(train 5-way, test 20-way).

Everything else (execution paths, per-task BatchNorm, evaluation with
``test_inner_steps``) is :class:`~metarobust.learners.MAML`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .base import Learner
from .maml import _WORKER, MAML, Params

__all__ = ["ProtoMAML"]


class ProtoMAML(MAML):
    """MAML with a prototype-initialised head.

    Args:
        model: the backbone ``(N, ...) -> (N, ...)`` (BatchNorm converted as MAML does).
        ways: optional; checked if given (an int >= 1), but tasks of any ways are taken.
        inner_lr, inner_steps, test_inner_steps, order, path: as
            :class:`~metarobust.learners.MAML`.
        normalize, chunk_size, fuse_first_block: as :class:`~metarobust.learners.MAML`.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 test_inner_steps: int | None = None, order: str = "first", *,
                 ways: int | None = None, path: str = "auto",
                 normalize: Sequence[Any] | None = None, chunk_size: int | None = None,
                 fuse_first_block: bool = True) -> None:
        super().__init__(model, inner_lr=inner_lr, inner_steps=inner_steps,
                         test_inner_steps=test_inner_steps, order=order, variant="maml",
                         ways=1 if ways is None else ways, head=nn.Identity(), path=path,
                         normalize=normalize, chunk_size=chunk_size,
                         fuse_first_block=fuse_first_block)
        self.ways = None  # any number of ways
        self._episode_ways = 0  # the ways of the tasks being run, set by _inputs
        # the head's initial weights come from the prototypes, adapted with the backbone
        self._fast_names = [*self._fast_names, "head.weight", "head.bias"]

    def _task(self, params: Params, buffers: Params, lrs: Sequence[torch.Tensor] | None,
              sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, steps: int,
              first_order: bool, functional: bool) -> torch.Tensor:
        net = getattr(_WORKER, "nets", {}).get(id(self), self.net)
        body_buf = {k[5:]: v for k, v in buffers.items() if k.startswith("body.")}

        def features(p: Params, x: torch.Tensor) -> torch.Tensor:
            body = {k[5:]: v for k, v in p.items() if k.startswith("body.")}
            return functional_call(net.body, (body, body_buf), (x,)).flatten(1)

        def forward(p: Params, x: torch.Tensor) -> torch.Tensor:
            return F.linear(features(p, x), p["head.weight"], p["head.bias"])

        fs = features(params, sx)
        onehot = (sy[:, None] == torch.arange(self._episode_ways, device=sy.device)
                  ).to(fs.dtype)
        protos = (onehot.T @ fs) / onehot.sum(0).clamp_min(1.0)[:, None]
        # The inner loop differentiates the body and the head as independent variables:
        # the body enters it through copies, so that its inner gradient (second order) does
        # not also run back through the prototypes the head was made from.
        fast = {**{k: v.clone() for k, v in params.items()}, "head.weight": 2 * protos,
                "head.bias": -(protos * protos).sum(1)}

        def inner_loss(p: Params, x: torch.Tensor) -> torch.Tensor:
            return self._loss(forward(p, x), sy)

        for _ in range(steps):
            grads = self._inner_grads(inner_loss, fast, sx, first_order, functional)
            fast = {**fast, **{n: fast[n] - self.inner_lr * g
                               for n, g in zip(self._fast_names, grads)}}
        return forward(fast, qx)

    def _inputs(self, chunk: Any, ways: int | None) -> tuple[torch.Tensor, ...]:
        if ways is None:
            raise ValueError("ways: Proto-MAML classifies; pass the episodes' number of ways")
        self._episode_ways = ways
        sx = self.normalize(chunk.support_x.flatten(0, 1)).reshape(chunk.support_x.shape)
        qx = self.normalize(chunk.query_x.flatten(0, 1)).reshape(chunk.query_x.shape)
        return sx, chunk.support_y, qx

    def _predict_one(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                     ways: int | None) -> torch.Tensor:
        return Learner._predict_one(self, sx, sy, qx, ways)
