"""The shared part of the learners that embed a task once and classify its queries with a
head over the embeddings (Matching Networks, Relation Networks, R2-D2, MetaOptNet): one
backbone forward for a chunk's support and query items, BatchNorm statistics per task (as
ProtoNet, see :func:`~metarobust.learners.base.task_batch_norm`), the head in float32
whatever autocast gave the backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .base import Learner, task_batch_norm

__all__ = ["EmbeddingLearner"]


class EmbeddingLearner(Learner):
    """Base of the embedding-and-head learners. Subclasses implement
    ``_head(se, sy, qe, ways) -> (c, Q, ways)`` over support embeddings ``se (c, S, ...)``,
    labels ``sy (c, S)`` and query embeddings ``qe (c, Q, ...)``.

    Args:
        backbone: embedding network ``(N, ...) -> (N, ...)``; ``flatten`` says whether its
            outputs are flattened to ``(N, D)`` before the head.
        normalize, chunk_size: see :class:`Learner`.
    """

    flatten = True

    def __init__(self, backbone: nn.Module, *, normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(normalize=normalize, chunk_size=chunk_size)
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone: expected an nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone

    def embed(self, x: torch.Tensor, tasks: int = 1) -> torch.Tensor:
        """Embeddings of ``N`` raw items (``(N, D)`` when ``flatten``), BatchNorm statistics
        per each of ``tasks`` equal consecutive groups."""
        x = self.normalize(x)
        with task_batch_norm(self.backbone, tasks):
            out = self.backbone(x)
        return out.reshape(x.shape[0], -1) if self.flatten else out

    def _chunk_outputs(self, chunk: Any, ways: int | None, meta: bool) -> torch.Tensor:
        if ways is None:
            raise ValueError(f"ways: {type(self).__name__} classifies; pass the episodes' "
                             "number of ways")
        sx, sy, qx = chunk.support_x, chunk.support_y, chunk.query_x
        c, s, q = sx.shape[0], sx.shape[1], qx.shape[1]
        with torch.set_grad_enabled(meta and torch.is_grad_enabled()):
            items = torch.cat([sx, qx], dim=1).reshape(c * (s + q), *sx.shape[2:])
            emb = self.embed(items, tasks=c)
            emb = emb.reshape(c, s + q, *emb.shape[1:])
            with torch.autocast(emb.device.type, enabled=False):
                if emb.dtype in (torch.bfloat16, torch.float16):
                    emb = emb.float()
                return self._head(emb[:, :s], sy, emb[:, s:], ways)

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        raise NotImplementedError
