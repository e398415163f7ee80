"""TIM (Boudiaf et al., 2020), the gradient-descent variant TIM-GD: transductive
information maximisation over the embeddings of a pre-trained backbone.

Support and query embeddings are L2-normalised; class ``k`` has a weight ``w_k``, started
at the mean of its normalised support embeddings, and the logits are
``T (<x, w_k> - |w_k|^2 / 2 - |x|^2 / 2) = -T |x - w_k|^2 / 2``. The weights of each task
are fitted by ``iterations`` Adam steps (no bias, as in the authors' code) on

    ``ce_weight * CE(support) - (marginal_weight * H(Y_Q) - conditional_weight * H(Y_Q|X_Q))``

with ``CE`` the support cross-entropy (mean over items), ``H(Y_Q)`` the entropy of the
mean query prediction (the marginal) and ``H(Y_Q|X_Q)`` the mean entropy of each query's
prediction: confident predictions that use every class. Defaults as in the authors' code
and paper: ``T = 15``, weights ``(0.1, 1, 0.1)``, Adam with learning rate ``1e-4`` and
1000 iterations. With ``iterations=0`` it is a nearest-prototype classifier on the
normalised embeddings (logits ``-T/2`` times the squared distances).

The fit runs inside the forward, on detached embeddings, for all the tasks of a chunk at
once (gradients written out, no autograd graph), in evaluation as in training. The query
logits are differentiable with respect to the query images; the fitted weights count as a
constant offset from their initialisation (the prototypes), so gradients also reach the
support images through the initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._transfer import TransferLearner, class_means, fit_offset, mask_absent

__all__ = ["TIM", "tim_fit", "tim_logits", "tim_loss_terms"]

BETAS = (0.9, 0.999)  # Adam's defaults, as the authors use them
ADAM_EPS = 1e-8
LOG_EPS = 1e-12  # inside the logarithm of the conditional entropy, as the authors' code


def tim_logits(x: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T (<x, w_k> - |w_k|^2 / 2 - |x|^2 / 2)`` for ``x (c, n, D)``, ``w (c, ways, D)``."""
    return temperature * (x @ w.transpose(1, 2) - 0.5 * w.pow(2).sum(-1)[:, None, :]
                          - 0.5 * x.pow(2).sum(-1, keepdim=True))


def tim_loss_terms(w: torch.Tensor, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
                   temperature: float = 15.0) -> tuple[torch.Tensor, torch.Tensor,
                                                       torch.Tensor]:
    """The three terms of TIM's loss for each task, ``(c,)`` each: the support
    cross-entropy, the marginal entropy ``H(Y_Q)`` and the conditional entropy
    ``H(Y_Q|X_Q)`` of the classifier ``w (c, ways, D)`` on normalised embeddings (to
    follow a fit: the loss is ``ce_weight * ce - (marginal_weight * marginal -
    conditional_weight * conditional)``)."""
    ce = F.cross_entropy(tim_logits(se, w, temperature).transpose(1, 2), sy,
                         reduction="none").mean(1)
    pq = tim_logits(qe, w, temperature).softmax(-1)
    conditional = -(pq * torch.log(pq + LOG_EPS)).sum(-1).mean(1)
    m = pq.mean(1)
    marginal = -torch.special.xlogy(m, m).sum(-1)
    return ce, marginal, conditional


def _score_gradients(p: torch.Tensor, onehot: torch.Tensor, s: int,
                     weights: tuple[float, float, float]) -> torch.Tensor:
    """The loss's gradient with respect to the logits ``(c, S + Q, ways)``, given their
    softmax ``p`` (the support items, then the queries), the loss weights ``weights``
    already multiplied by the temperature."""
    ce_w, marg_w, cond_w = weights
    ps, pq = p[:, :s], p[:, s:]
    q = pq.shape[1]
    g_support = (ps - onehot).mul_(ce_w / s)  # the mean cross-entropy
    # for a query, cond_w H(Y|X) - marg_w H(Y) has the gradient p * (b - sum_k p b),
    # b = (marg_w log(m) - cond_w log(p + eps)) / q, m the mean prediction: constants
    # added to b across classes cancel (the derivatives of the logarithms add some; the
    # sum of the predictions stands for their mean). An absent class has m = p = 0.
    b = torch.log(pq + LOG_EPS).mul_(-cond_w / q)
    b += torch.log(pq.sum(1, keepdim=True).clamp_min_(1e-30)).mul_(marg_w / q)
    g_query = pq * b.sub_((pq * b).sum(-1, keepdim=True))
    return torch.cat([g_support, g_query], dim=1)


@torch.no_grad()
def tim_fit(se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor, ways: int, *,
            iterations: int = 1000, lr: float = 1e-4, temperature: float = 15.0,
            ce_weight: float = 0.1, marginal_weight: float = 1.0,
            conditional_weight: float = 0.1) -> torch.Tensor:
    """The TIM-GD weights ``(c, ways, D)`` for L2-normalised support ``se (c, S, D)``
    (labels ``sy (c, S)``) and query ``qe (c, Q, D)`` embeddings: ``iterations`` Adam steps
    from the prototypes (see the module docstring). Tasks are independent: each one's
    weights are those of fitting it alone."""
    w, present = class_means(se, sy, ways)
    onehot = F.one_hot(sy, ways).to(se.dtype)
    x = torch.cat([se, qe], dim=1)
    s, t_ = se.shape[1], temperature
    absent = None if bool(present.all()) else (
        torch.zeros_like(present, dtype=se.dtype).masked_fill_(~present, float("-inf")))
    m1, m2 = torch.zeros_like(w), torch.zeros_like(w)
    b1, b2 = BETAS
    weights = (t_ * ce_weight, t_ * marginal_weight, t_ * conditional_weight)
    for step in range(1, iterations + 1):
        # |x|^2 / 2 is the same for every class: the softmax ignores it
        bias = (w * w).sum(-1).mul_(-0.5 * t_)
        if absent is not None:
            bias += absent
        p = torch.baddbmm(bias[:, None, :], x, w.transpose(1, 2), alpha=t_).softmax(-1)
        dscores = _score_gradients(p, onehot, s, weights)  # already times T
        grad = torch.baddbmm(dscores.sum(1)[..., None] * w, dscores.transpose(1, 2), x,
                             beta=-1)
        # Adam: torch.optim.Adam's step, sqrt(m2 / c2) + eps written as
        # (sqrt(m2) + eps sqrt(c2)) / sqrt(c2) to save an operation
        m1.lerp_(grad, 1 - b1)
        m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        root_c2 = (1 - b2 ** step) ** 0.5
        w.addcdiv_(m1, m2.sqrt().add_(ADAM_EPS * root_c2),
                   value=-lr * root_c2 / (1 - b1 ** step))
    return w


class TIM(TransferLearner):
    """TIM-GD: a classifier fitted to each task's support and query embeddings by
    information maximisation, over a pre-trained backbone.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        iterations: Adam steps per task (>= 0).
        lr: Adam's learning rate (> 0).
        temperature: ``T`` of the logits (> 0).
        ce_weight, marginal_weight, conditional_weight: the loss weights (>= 0) of the
            support cross-entropy, the query marginal entropy and the query conditional
            entropy.
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.

    No episodic stage: the Trainer pre-trains the backbone with a linear head and never
    calls ``meta_backward`` (which still works: the loss of the fitted classifier's logits).
    """

    pretrain_head = "linear"
    episodic = False

    def __init__(self, backbone: nn.Module, *, iterations: int = 1000, lr: float = 1e-4,
                 temperature: float = 15.0, ce_weight: float = 0.1,
                 marginal_weight: float = 1.0, conditional_weight: float = 0.1,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        self.iterations = check_int(iterations, "iterations", 0, 100_000)
        self.lr = check_real(lr, "lr", 0.0, low_open=True)
        self.temperature = check_real(temperature, "temperature", 0.0, low_open=True)
        self.ce_weight = check_real(ce_weight, "ce_weight", 0.0)
        self.marginal_weight = check_real(marginal_weight, "marginal_weight", 0.0)
        self.conditional_weight = check_real(conditional_weight, "conditional_weight", 0.0)

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        xs, xq = F.normalize(se, dim=-1, eps=1e-12), F.normalize(qe, dim=-1, eps=1e-12)
        start, present = class_means(xs, sy, ways)
        fitted = tim_fit(xs.detach(), sy, xq.detach(), ways, iterations=self.iterations,
                         lr=self.lr, temperature=self.temperature, ce_weight=self.ce_weight,
                         marginal_weight=self.marginal_weight,
                         conditional_weight=self.conditional_weight)
        w = fit_offset(start, fitted)
        return mask_absent(tim_logits(xq, w, self.temperature), present)
