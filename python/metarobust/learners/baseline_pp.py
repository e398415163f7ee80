"""Baseline++ (Chen et al., 2019): a backbone pre-trained with a cosine classifier over the
base classes; at test time a new cosine classifier fitted to each support set, the
backbone frozen.

The head is the one of Chen et al.'s code: ``scores = scale * <x / (|x| + 1e-5), w_k>``
with each class's weight under weight normalisation, ``w_k = g_k v_k / |v_k|`` (a learned
direction ``v_k`` and a learned norm ``g_k``), ``scale`` 2 for up to 200 classes and 10
beyond. It is fitted as in that code: 100 epochs over the support set in mini-batches of
4 (a random order per epoch), SGD with learning rate 0.01, momentum 0.9 with dampening
0.9, weight decay 1e-3 on ``g`` and ``v``, on the mean cross-entropy of each mini-batch
(200 steps for a 5-way 1-shot task, 700 for 5-shot). Two choices make it deterministic:
the order comes from a generator seeded with 0 (the same for every task and call), and
``v_k`` starts at the mean of class ``k``'s normalised support embeddings with
``g_k = |v_k|`` (the code draws a random initialisation), so the fit starts from the
cosine prototype classifier.

The fit runs inside the forward, on detached support embeddings, for all the tasks of a
chunk at once (its gradients written out: no autograd graph, whatever the grad mode), in
evaluation as in training. The query logits are differentiable with respect to the query
images; the fitted weights count as a constant offset from their initialisation (the
class means), so gradients also reach the support images through the initialisation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._transfer import TransferLearner, class_means, fit_offset, mask_absent

__all__ = ["BaselinePP", "fit_cosine_head", "reference_scale"]

MOMENTUM = 0.9
DAMPENING = 0.9


def reference_scale(ways: int) -> float:
    """The scale of Chen et al.'s cosine classifier: 2 for up to 200 classes, 10 beyond."""
    return 2.0 if ways <= 200 else 10.0


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``x / (|x| + 1e-5)`` along the last dimension (Chen et al.'s normalisation)."""
    return x / (x.norm(dim=-1, keepdim=True) + 1e-5)


def _batches(size: int, epochs: int, batch_size: int | None,
             device: torch.device) -> Iterator[torch.Tensor]:
    """The support indices of each step: per epoch a random order (a generator seeded
    with 0: the same for every task and call) cut into mini-batches, or all items."""
    if batch_size is None or batch_size >= size:
        everything = torch.arange(size, device=device)
        for _ in range(epochs):
            yield everything
        return
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(size, generator=gen).to(device)
        yield from order.split(batch_size)


@torch.no_grad()
def fit_cosine_head(x: torch.Tensor, y: torch.Tensor, ways: int, *, epochs: int = 100,
                    batch_size: int | None = 4, lr: float = 0.01,
                    weight_decay: float = 1e-3, scale: float = 2.0) -> torch.Tensor:
    """The weights ``w (c, ways, D)`` of the cosine classifier fitted to normalised support
    embeddings ``x (c, S, D)`` with labels ``y (c, S)``: ``epochs`` passes of SGD over
    mini-batches of ``batch_size`` items (None: the whole support set), from the class
    means (see the module docstring). Tasks are independent: each one's weights are those
    of fitting it alone."""
    onehot = F.one_hot(y, ways).to(x.dtype)
    v, present = class_means(x, y, ways)
    g = v.norm(dim=-1)
    absent = None if bool(present.all()) else ~present[:, None, :]
    buf_g = buf_v = None
    for idx in _batches(x.shape[1], epochs, batch_size, x.device):
        xb, yb = x[:, idx], onehot[:, idx]
        vnorm = v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        u = v / vnorm
        scores = scale * (xb @ (g[..., None] * u).transpose(1, 2))
        if absent is not None:
            scores = scores.masked_fill(absent, float("-inf"))
        dscores = (scores.softmax(-1) - yb) / idx.numel()  # mean cross-entropy
        dw = scale * (dscores.transpose(1, 2) @ xb)
        dg = (dw * u).sum(-1)
        dv = (g[..., None] / vnorm) * (dw - dg[..., None] * u)
        dg, dv = dg + weight_decay * g, dv + weight_decay * v
        # torch.optim.SGD's momentum: the first step takes the gradient as it is
        buf_g = dg if buf_g is None else buf_g.mul_(MOMENTUM).add_(dg, alpha=1 - DAMPENING)
        buf_v = dv if buf_v is None else buf_v.mul_(MOMENTUM).add_(dv, alpha=1 - DAMPENING)
        g = g - lr * buf_g
        v = v - lr * buf_v
    return g[..., None] * v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class BaselinePP(TransferLearner):
    """A cosine classifier fitted to each support set over a pre-trained backbone.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        finetune_epochs: passes of SGD over each support set (>= 0; 0 leaves the cosine
            prototype classifier the fit starts from).
        batch_size: support items per SGD step (>= 1); None: the whole support set.
        finetune_lr: the learning rate (> 0).
        weight_decay: the weight decay (>= 0).
        scale: the cosine scale; None: Chen et al.'s, 2 for up to 200 ways, else 10.
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.

    No episodic stage: the Trainer pre-trains the backbone with a cosine head and never
    calls ``meta_backward`` (which still works: the loss of the fitted head's logits).
    """

    pretrain_head = "cosine"
    episodic = False

    def __init__(self, backbone: nn.Module, *, finetune_epochs: int = 100,
                 batch_size: int | None = 4, finetune_lr: float = 0.01,
                 weight_decay: float = 1e-3, scale: float | None = None,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        self.finetune_epochs = check_int(finetune_epochs, "finetune_epochs", 0, 100_000)
        self.batch_size = (None if batch_size is None
                           else check_int(batch_size, "batch_size", 1))
        self.finetune_lr = check_real(finetune_lr, "finetune_lr", 0.0, low_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", 0.0)
        self.scale = (None if scale is None
                      else check_real(scale, "scale", 0.0, low_open=True))

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        scale = reference_scale(ways) if self.scale is None else self.scale
        xs, xq = unit_rows(se), unit_rows(qe)
        start, present = class_means(xs, sy, ways)
        fitted = fit_cosine_head(xs.detach(), sy, ways, epochs=self.finetune_epochs,
                                 batch_size=self.batch_size, lr=self.finetune_lr,
                                 weight_decay=self.weight_decay, scale=scale)
        w = fit_offset(start, fitted)
        return mask_absent(scale * (xq @ w.transpose(1, 2)), present)
