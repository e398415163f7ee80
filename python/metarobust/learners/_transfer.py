"""The shared part of the transfer baselines (SimpleShot, Baseline++, Meta-Baseline, TIM):
a backbone pre-trained as a standard classifier over the base classes, then a few-shot
head over its embeddings at test time.

The pre-training stage belongs to the :class:`~metarobust.train.Trainer` (its
``pretrain_share`` of the budget: batches of base-class images, cross-entropy through a
classifier head over all base classes that the trainer owns and drops afterwards). The
learner says which head it is pre-trained with (``pretrain_head``) and may watch the
pre-training features (``observe_base_features``: SimpleShot keeps their mean).

A class left without support items in a task (support-label noise can empty one) gets a
logit of ``-inf`` from every transfer learner: never predicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._embedding import EmbeddingLearner

__all__ = ["TransferLearner", "class_means", "fit_offset", "mask_absent"]


def class_means(x: torch.Tensor, y: torch.Tensor,
                ways: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means ``(c, ways, D)`` of ``x (c, S, D)`` under labels ``y (c, S)`` and
    which classes have items ``(c, ways)`` (the mean of an empty class is 0)."""
    onehot = F.one_hot(y, ways).to(x.dtype)
    counts = onehot.sum(1)
    means = onehot.transpose(1, 2) @ x / counts.clamp_min(1)[..., None]
    return means, counts > 0


def mask_absent(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``logits (c, Q, ways)`` with ``-inf`` for the classes absent from a task's support."""
    if bool(present.all()):
        return logits
    return logits.masked_fill(~present[:, None, :], float("-inf"))


def fit_offset(start: torch.Tensor, fitted: torch.Tensor) -> torch.Tensor:
    """``fitted``'s value with ``start``'s gradient: the head's fit is a constant offset
    from its differentiable initialisation (so attacks on the support images see the
    gradient of the initial classifier rather than none)."""
    return start + (fitted - start).detach()


class TransferLearner(EmbeddingLearner):
    """Base of the learners whose backbone is pre-trained as a classifier.

    ``pretrain_head``: ``"linear"`` (``W f + b``) or ``"cosine"`` (a scaled cosine between
    ``f`` and each class's weight vector, Baseline++). ``episodic``: whether the learner
    has an episodic stage after the pre-training (Meta-Baseline) or is used as pre-trained
    (the others; ``pretrain_share`` is then the whole budget).
    """

    pretrain_head = "linear"
    episodic = False

    def observe_base_features(self, features: torch.Tensor) -> None:
        """Called by the trainer with each pre-training batch's detached embeddings
        ``(N, D)``, in training mode; nothing by default."""
