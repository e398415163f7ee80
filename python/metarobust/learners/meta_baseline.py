"""Meta-Baseline (Chen et al., 2021): a backbone pre-trained as a linear classifier over the
base classes, then meta-trained episodically with a cosine prototype classifier.

The logits are ``tau * cos(f(q), p_k)``, ``p_k`` the mean of class ``k``'s support
embeddings and ``tau`` a learned temperature (10 at the start, as in the paper). The
episodic stage is the shared ``meta_backward`` of the embedding learners.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_real
from ._transfer import TransferLearner, class_means, mask_absent

__all__ = ["MetaBaseline"]


class MetaBaseline(TransferLearner):
    """Cosine prototype classifier with a learned temperature, after classifier
    pre-training.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        temperature: the initial ``tau`` (> 0).
        learn_temperature: meta-learn ``tau`` (else it stays fixed).
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.

    The Trainer pre-trains the backbone with a linear head, then meta-trains the learner
    (``episodic = True``) through ``meta_backward``.
    """

    pretrain_head = "linear"
    episodic = True

    def __init__(self, backbone: nn.Module, *, temperature: float = 10.0,
                 learn_temperature: bool = True,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        temperature = check_real(temperature, "temperature", 0.0, low_open=True)
        learn = check_bool(learn_temperature, "learn_temperature")
        self.temperature = nn.Parameter(torch.tensor(temperature), requires_grad=learn)

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        protos, present = class_means(se, sy, ways)
        cos = F.normalize(qe, dim=-1, eps=1e-12) @ F.normalize(protos, dim=-1,
                                                              eps=1e-12).transpose(1, 2)
        return mask_absent(self.temperature.to(cos.dtype) * cos, present)
