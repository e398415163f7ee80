"""MAML as learn2learn runs it, written out (no learn2learn dependency): the reference that
metarobust's MAML paths are timed and checked against.

``style="learn2learn"`` (the ``reference`` candidate): per task, clone the module (the
mechanics of learn2learn's ``clone_module``: the module objects copied, every parameter
replaced by ``p.clone()``), adapt with ``torch.autograd.grad`` (``create_graph=True`` for
second order; first order: no graph, the gradients are constants) and learn2learn's
``update_module`` (each parameter replaced by ``p - lr g``), query loss through the adapted
module and ``(loss / tasks).backward()`` per task. Its BatchNorm layers keep no running
statistics (``track_running_stats=False``, as learn2learn's Omniglot CNN) and normalise
every forward with their own batch statistics.

``style="functional"`` (the ``plain`` candidate): the same loop without the module cloning,
cloned parameters applied with ``torch.func.functional_call``: a lean plain autograd loop,
shown beside the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..episodes import Episode

MAML_ORDERS = ("second", "first")
# Finn et al.'s Omniglot setting, the benchmark's: one inner step at learning rate 0.4.
MAML_INNER_LR = 0.4
MAML_INNER_STEPS = 1


class _RefClassifier(nn.Module):
    """Backbone + linear head; parameter names as in MAML's classifier (``body.``/``head.``)."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def _clone_module(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters are ``p.clone()`` (so gradients flow back to the
    originals), submodules copied the same way; the mechanics of learn2learn's
    ``clone_module``: the module object and its dictionaries are copied, not deep-copied."""
    clone = module.__new__(type(module))
    clone.__dict__ = module.__dict__.copy()
    # plain tensors where parameters were, as learn2learn leaves them
    clone._parameters = {k: None if p is None else p.clone()  # type: ignore[misc]
                         for k, p in module._parameters.items()}
    clone._buffers = module._buffers.copy()
    clone._modules = {k: None if m is None else _clone_module(m)
                      for k, m in module._modules.items()}
    return clone


def _update_module(module: nn.Module, updates: dict[int, torch.Tensor]) -> None:
    """Replaces every parameter ``p`` of ``module`` by ``p + updates[id(p)]``, walking the
    submodules (learn2learn's ``update_module``)."""
    for k, p in module._parameters.items():
        if p is not None:
            module._parameters[k] = p + updates[id(p)]  # type: ignore[assignment]
    for m in module._modules.values():
        if m is not None:
            _update_module(m, updates)


class ReferenceMAML:
    """MAML the way learn2learn's ``MAML`` wrapper runs it (see the module docstring): for
    each task, clone the module (``style="learn2learn"``: learn2learn's ``clone_module``
    and ``update_module`` mechanics, the adapted module called as usual;
    ``style="functional"``: cloned parameters applied with ``torch.func.functional_call``),
    take ``inner_steps`` steps of ``p - lr * g`` with ``g = torch.autograd.grad(support
    loss, params, create_graph=second_order)`` (first order: no graph, ``g`` detached),
    then ``(query loss / tasks).backward()`` per task, accumulating into the
    meta-parameters' ``.grad``.

    ``net`` must use batch statistics in every forward (BatchNorm without running
    statistics, training mode), as learn2learn's Omniglot CNN does.
    """

    STYLES = ("learn2learn", "functional")

    def __init__(self, net: nn.Module, inner_lr: float = MAML_INNER_LR,
                 inner_steps: int = MAML_INNER_STEPS, order: str = "second",
                 style: str = "learn2learn") -> None:
        if order not in MAML_ORDERS:
            raise ValueError(f"order: expected one of {MAML_ORDERS}, got {order!r}")
        if style not in self.STYLES:
            raise ValueError(f"style: expected one of {self.STYLES}, got {style!r}")
        self.net, self.inner_lr, self.inner_steps = net, inner_lr, inner_steps
        self.second_order = order == "second"
        self.style = style

    def _learn2learn_query_loss(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                                qy: torch.Tensor) -> torch.Tensor:
        lr, second = self.inner_lr, self.second_order
        learner = _clone_module(self.net)
        for _ in range(self.inner_steps):
            params = list(learner.parameters())
            grads = torch.autograd.grad(F.cross_entropy(learner(sx), sy), params,
                                        create_graph=second, retain_graph=second)
            _update_module(learner, {id(p): -lr * (g if second else g.detach())
                                     for p, g in zip(params, grads)})
        return F.cross_entropy(learner(qx), qy)

    def _functional_query_loss(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                               qy: torch.Tensor) -> torch.Tensor:
        lr, second = self.inner_lr, self.second_order
        fast = {n: p.clone() for n, p in self.net.named_parameters()}
        for _ in range(self.inner_steps):
            loss = F.cross_entropy(functional_call(self.net, fast, (sx,)), sy)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=second,
                                        retain_graph=second)
            fast = {n: p - lr * (g if second else g.detach())
                    for (n, p), g in zip(fast.items(), grads)}
        return F.cross_entropy(functional_call(self.net, fast, (qx,)), qy)

    def _adapted_query_loss(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                            qy: torch.Tensor) -> torch.Tensor:
        """One task: the query loss after adapting to the support set, in this style."""
        if self.style == "learn2learn":
            return self._learn2learn_query_loss(sx, sy, qx, qy)
        return self._functional_query_loss(sx, sy, qx, qy)

    def meta_backward(self, batch: Episode, ways: int | None = None) -> float:
        """Mean query loss over the batch's tasks; the meta-gradient lands in ``.grad``."""
        b = batch.support_x.shape[0]
        total = 0.0
        for i in range(b):
            qloss = self._adapted_query_loss(batch.support_x[i], batch.support_y[i],
                                             batch.query_x[i], batch.query_y[i])
            (qloss / b).backward()
            total += float(qloss.detach())
        return total / b
