"""The shared part of the transfer baselines (SimpleShot, Baseline++, Meta-Baseline, TIM):
a backbone pre-trained as a standard classifier over the base classes, then a few-shot
head over its embeddings at test time.

The pre-training stage belongs to the :class:`~metarobust.train.Trainer` (its
``pretrain_share`` of the budget: batches of base-class images, cross-entropy through a
classifier head over all base classes that the trainer owns and drops afterwards). The
learner says which head it is pre-trained with (``pretrain_head``) and may watch the
pre-training features (``observe_base_features``: SimpleShot keeps their mean).
"""

from __future__ import annotations

import torch

from ._embedding import EmbeddingLearner

__all__ = ["TransferLearner"]


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
