"""Relation Networks (Sung et al., 2018): a learned relation module scores each (query,
class) pair from the concatenation of the query's embedding and the class embedding (the
sum of the class's support embeddings, as the paper's K-shot rule); the loss is the mean
squared error between ``sigmoid(score)`` and the one-hot target, as in the paper. The
logits returned are the scores before the sigmoid (the same ranking).

A backbone returning feature maps ``(N, C, h, w)`` (e.g. ``conv4_sung``: Sung et al.'s
encoder, the last two blocks without pooling) gets the paper's relation module: two
3x3 convolution blocks of ``C`` channels (BatchNorm, ReLU, 2x2 max-pooling while the map
is at least 2 wide), then ``Linear(., hidden)``, ReLU, ``Linear(hidden, 1)``. A backbone
returning flat features ``(N, D)`` gets an MLP in place of the convolutions
(``Linear(2D, D)``, ReLU, then the same two layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_nbytes
from ._embedding import EmbeddingLearner
from .base import task_batch_norm

__all__ = ["RelationNet"]


def _output_shape(backbone: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """One item's output shape: ``(out_features,)`` if the backbone has an int one and no
    ``input_shape`` is given, else found by a dry run on two zero inputs (eval, no grad)."""
    feats = getattr(backbone, "out_features", None)
    if input_shape is None:
        if isinstance(feats, int) and not isinstance(feats, bool) and feats >= 1:
            return (feats,)
        raise ValueError(f"input_shape: a {type(backbone).__name__} backbone has no int "
                         "`out_features`; pass input_shape=(C, H, W) so the relation module "
                         "is sized by a dry run")
    if (not isinstance(input_shape, (tuple, list)) or not input_shape
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                   for d in input_shape)):
        raise ValueError(f"input_shape: expected a tuple of ints >= 1 such as (C, H, W), got "
                         f"{input_shape!r}")
    ref = next(iter(backbone.parameters()), None)
    kw: dict[str, Any] = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros(2, *input_shape, **kw))
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"input_shape: the backbone fails on inputs of shape "
                         f"{tuple(input_shape)} ({e})") from None
    finally:
        backbone.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() not in (2, 4) or out.shape[0] != 2:
        raise ValueError(f"backbone: expected (N, D) features or (N, C, h, w) maps, got "
                         f"{tuple(getattr(out, 'shape', ()))} for 2 inputs")
    return tuple(out.shape[1:])


def _relation_module(shape: tuple[int, ...], hidden: int) -> nn.Sequential:
    if len(shape) == 1:
        d = shape[0]
        return nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, hidden), nn.ReLU(),
                             nn.Linear(hidden, 1))
    c, h, w = shape
    layers: list[nn.Module] = []
    for i in range(2):
        layers += [nn.Conv2d(2 * c if i == 0 else c, c, 3, padding=1), nn.BatchNorm2d(c),
                   nn.ReLU()]
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


class RelationNet(EmbeddingLearner):
    """Relation network.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)`` or ``(N, C, h, w)``.
        hidden: width of the relation module's last hidden layer (8 in the paper).
        input_shape: one input's shape ``(C, H, W)``: the relation module is sized by a dry
            run of the backbone (needed for feature maps or without an int
            ``out_features``).
        normalize, chunk_size: see :class:`~metarobust.learners.Learner`.
    """

    flatten = False

    def __init__(self, backbone: nn.Module, *, hidden: int = 8,
                 input_shape: Sequence[int] | None = None,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__(backbone, normalize=normalize, chunk_size=chunk_size)
        hidden = check_int(hidden, "hidden", 1, 1 << 20)
        self.feature_shape = _output_shape(backbone, input_shape)
        first = 4 * self.feature_shape[0] ** 2 if len(self.feature_shape) == 1 else 0
        check_nbytes(first + 4 * 18 * self.feature_shape[0] ** 2, "backbone",
                     f"a relation module over features of shape {self.feature_shape}")
        self.relation = _relation_module(self.feature_shape, hidden)

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        c, s, q = se.shape[0], se.shape[1], qe.shape[1]
        shape = self.feature_shape
        se, qe = se.reshape(c, s, *shape), qe.reshape(c, q, *shape)
        onehot = F.one_hot(sy, ways).to(se.dtype)  # (c, S, ways)
        classes = torch.einsum("csk,cs...->ck...", onehot, se)  # the sum of each class
        pairs = torch.cat([qe[:, :, None].expand(c, q, ways, *shape),
                           classes[:, None].expand(c, q, ways, *shape)], dim=3)
        with task_batch_norm(self.relation, c):
            scores = self.relation(pairs.reshape(c * q * ways, 2 * shape[0], *shape[1:]))
        return scores.reshape(c, q, ways)

    def _task_losses(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        """Per-task mean squared error of ``sigmoid(score)`` against the one-hot targets,
        and the accuracy of the highest score."""
        c, q, ways = out.shape
        target = F.one_hot(y, ways).to(out.dtype)
        loss = (torch.sigmoid(out) - target).pow(2).reshape(c, -1).mean(1)
        acc = (out.detach().argmax(-1) == y).to(out.dtype).mean(1)
        return loss, acc
