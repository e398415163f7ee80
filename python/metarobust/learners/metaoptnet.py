"""MetaOptNet-SVM (Lee et al., 2019): a multi-class linear SVM (Crammer and Singer) fitted
to each task's support embeddings by a differentiable solver of its dual
(:mod:`metarobust.learners._svm`), the query logits ``scale * <w_k, q>`` with a meta-learned
``scale``. Lee et al. use ``C = 0.1`` and an interior-point QP solver; here a fixed number
of accelerated projected-gradient iterations, differentiated through by unrolling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_real
from ._embedding import EmbeddingLearner
from ._svm import crammer_singer_dual

__all__ = ["MetaOptNet"]


class MetaOptNet(EmbeddingLearner):
    """Linear SVM head over a backbone's embeddings.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        c: the SVM's cost parameter (> 0).
        solver_steps: dual solver iterations in meta-training.
        test_solver_steps: iterations in evaluation and ``predict`` (default: solver_steps).
        scale: the initial scale of the logits (> 0), meta-learned (in log space).
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.
    """

    def __init__(self, backbone: nn.Module, *, c: float = 0.1, solver_steps: int = 50,
                 test_solver_steps: int | None = None, scale: float = 1.0,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        self.c = check_real(c, "c", 0.0, low_open=True)
        self.solver_steps = check_int(solver_steps, "solver_steps", 1, 100_000)
        self.test_solver_steps = check_int(
            self.solver_steps if test_solver_steps is None else test_solver_steps,
            "test_solver_steps", 1, 100_000)
        scale = check_real(scale, "scale", 0.0, low_open=True)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        dtype = se.dtype
        steps = self.solver_steps if self.training else self.test_solver_steps
        y = F.one_hot(sy, ways).to(dtype)
        alpha = crammer_singer_dual(se @ se.transpose(-1, -2), y, self.c, steps)
        weights = alpha.transpose(-1, -2) @ se  # (c, ways, D)
        return self.log_scale.to(dtype).exp() * (qe @ weights.transpose(-1, -2))
