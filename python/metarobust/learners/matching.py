"""Matching Networks (Vinyals et al., 2016): a query's class probabilities are an attention
over the support set, ``p(k | q) = sum_i a(q, x_i) [y_i = k]`` with
``a(q, x_i) = softmax_i(scale * cos(f(q), g(x_i)))``. The logits returned are
``log p(k | q)`` (so the cross-entropy is the paper's loss), ``-inf`` for a class without a
support item (support-label noise can empty one: never predicted).

``fce=True`` adds the full-context embeddings of the paper's appendix: the support
embeddings read by a bidirectional LSTM over the support set, ``g(x_i) = g'(x_i) +
h_fwd_i + h_bwd_i``, and each query embedding refined by ``fce_steps`` steps of an LSTM
attending over them (``h_k = LSTM(f'(q), h_{k-1} + r_{k-1}) + f'(q)``, ``r_k`` the
attention read-out of ``g``; the paper feeds ``[h, r]`` concatenated, which needs a state
twice as wide). Vinyals et al. report Omniglot without FCE, with ``scale`` 1; a larger
``scale`` (a sharper softmax over cosines in [-1, 1]) trains faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_int, check_nbytes, check_real
from ._embedding import EmbeddingLearner
from ._task_inputs import feature_size

__all__ = ["MatchingNet"]


class _FullContext(nn.Module):
    """The full-context embeddings: a bidirectional LSTM over the support embeddings and
    an attention LSTM over them for the queries."""

    def __init__(self, features: int, steps: int) -> None:
        super().__init__()
        self.support_lstm = nn.LSTM(features, features, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(features, features)
        self.steps = steps

    def support(self, se: torch.Tensor) -> torch.Tensor:
        out, _ = self.support_lstm(se)  # (c, S, 2D): forward and backward states
        d = se.shape[-1]
        return se + out[..., :d] + out[..., d:]

    def query(self, qe: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        c, q, d = qe.shape
        x = qe.reshape(c * q, d)
        h = torch.zeros_like(x)
        cell = torch.zeros_like(x)
        r = torch.zeros_like(x)
        for _ in range(self.steps):
            h, cell = self.query_cell(x, (h + r, cell))
            h = h + x
            att = torch.softmax(torch.einsum("cqd,csd->cqs", h.reshape(c, q, d), g), -1)
            r = torch.einsum("cqs,csd->cqd", att, g).reshape(c * q, d)
        return h.reshape(c, q, d)


class MatchingNet(EmbeddingLearner):
    """Matching network with cosine attention.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        scale: the attention's softmax runs over ``scale * cosine`` (> 0).
        fce: full-context embeddings (see the module docstring).
        fce_steps: attention-LSTM steps of the query embeddings (with ``fce``).
        input_shape: one input's shape ``(C, H, W)``, for ``fce`` with a backbone without an
            int ``out_features`` (the LSTMs' width is found by a dry run).
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.
    """

    def __init__(self, backbone: nn.Module, *, scale: float = 10.0, fce: bool = False,
                 fce_steps: int = 5, input_shape: Sequence[int] | None = None,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        self.scale = check_real(scale, "scale", 0.0, low_open=True)
        self.fce = check_bool(fce, "fce")
        fce_steps = check_int(fce_steps, "fce_steps", 1)
        self.context: _FullContext | None = None
        if self.fce:
            d = feature_size(backbone, input_shape)
            check_nbytes(4 * 16 * d * d, "fce", f"full-context LSTMs of width {d}")
            self.context = _FullContext(d, fce_steps)

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        if self.context is not None:
            se = self.context.support(se)
            qe = self.context.query(qe, se)
        sims = self.scale * torch.einsum("cqd,csd->cqs", F.normalize(qe, dim=-1, eps=1e-8),
                                         F.normalize(se, dim=-1, eps=1e-8))
        member = F.one_hot(sy, ways).transpose(1, 2).bool()  # (c, ways, S)
        present = member.any(-1)  # (c, ways)
        # log sum_{i in k} exp(s_i) - log sum_i exp(s_i); a class with no item gets -inf,
        # computed on a finite stand-in so that its gradient is zero, not NaN
        masked = sims[:, :, None, :].masked_fill(~member[:, None], float("-inf"))
        masked = masked.masked_fill(~present[:, None, :, None], 0.0)
        logits = torch.logsumexp(masked, -1) - torch.logsumexp(sims, -1, keepdim=True)
        return logits.masked_fill(~present[:, None, :], float("-inf"))
