"""R2-D2 (Bertinetto et al., 2019): a ridge-regression head solved in closed form on each
task's support embeddings, differentiated through the solve.

With support embeddings ``X (n, D)`` and one-hot targets ``Y (n, ways)``, the weights are
``W = (X^T X + lam I_D)^-1 X^T Y``, computed in the Woodbury form
``W = X^T (X X^T + lam I_n)^-1 Y`` when the support is smaller than the feature size (an
``n x n`` system instead of ``D x D``; the same ``W``). The logits are
``scale * (Q W) + bias``, with ``lam``, ``scale`` and ``bias`` meta-learned (``lam`` and
``scale`` in log space, so they stay positive).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_real
from ._embedding import EmbeddingLearner

__all__ = ["R2D2", "ridge_weights"]


def ridge_weights(x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Ridge-regression weights ``(c, D, k)`` of targets ``y (c, n, k)`` on ``x (c, n, D)``
    with penalty ``lam > 0``: the Woodbury form when ``n < D``, else the primal one."""
    n, d = x.shape[-2], x.shape[-1]
    if n < d:
        gram = x @ x.transpose(-1, -2) + lam * torch.eye(n, dtype=x.dtype, device=x.device)
        return x.transpose(-1, -2) @ torch.linalg.solve(gram, y)
    cov = x.transpose(-1, -2) @ x + lam * torch.eye(d, dtype=x.dtype, device=x.device)
    return torch.linalg.solve(cov, x.transpose(-1, -2) @ y)


class R2D2(EmbeddingLearner):
    """Ridge-regression head over a backbone's embeddings.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        lam: the initial ridge penalty (> 0).
        scale, bias: the initial scale and bias of the logits (scale > 0).
        learn_lam: meta-learn ``lam`` (else it stays fixed).
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.
    """

    def __init__(self, backbone: nn.Module, *, lam: float = 1.0, scale: float = 10.0,
                 bias: float = 0.0, learn_lam: bool = True,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        lam = check_real(lam, "lam", 0.0, low_open=True)
        scale = check_real(scale, "scale", 0.0, low_open=True)
        bias = check_real(bias, "bias")
        learn_lam = check_bool(learn_lam, "learn_lam")
        self.log_lam = nn.Parameter(torch.tensor(math.log(lam)), requires_grad=learn_lam)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.bias = nn.Parameter(torch.tensor(bias))

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lam.exp()

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        dtype = se.dtype
        y = F.one_hot(sy, ways).to(dtype)
        w = ridge_weights(se, y, self.log_lam.to(dtype).exp())
        return self.log_scale.to(dtype).exp() * (qe @ w) + self.bias.to(dtype)
