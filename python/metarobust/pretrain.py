"""Classifier pre-training, the trainer's first stage for the transfer baselines (and, with
``pretrain_share``, for any learner that embeds a task).

A pre-training step draws ``batch_size`` images of the training set (every base class at
once, not episodes), embeds them with the learner's backbone (ordinary BatchNorm over the
batch) and back-propagates the cross-entropy of a classifier head over all base classes.
The head is the trainer's: it is saved in ``last.pt`` to resume, and left out of the
learner (``best.pt`` holds the learner only). Batches are read by position, each epoch a
permutation drawn from ``(seed, PRETRAIN, epoch)``, so a resumed run sees the images an
uninterrupted one would, and the ranks of a ``torchrun`` job take their slice of each
global batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import seeds
from .learners import Learner

__all__ = ["HEADS", "ClassifierHead", "Pretraining"]

HEADS = ("linear", "cosine")


class ClassifierHead(nn.Module):
    """Logits of ``classes`` base classes from features ``(N, D)``: ``W f + b`` (linear), or
    ``scale * cos(f, w_k)`` (cosine; Baseline++'s, with Chen et al.'s scale: 2 up to 200
    classes, else 10)."""

    def __init__(self, features: int, classes: int, kind: str = "linear") -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"kind: expected one of {', '.join(HEADS)}, got {kind!r}")
        self.kind = kind
        self.linear = nn.Linear(features, classes, bias=kind == "linear")
        self.scale = 2.0 if classes <= 200 else 10.0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return self.linear(features)
        w = F.normalize(self.linear.weight, dim=1)
        return self.scale * (F.normalize(features, dim=1) @ w.t())


class Pretraining:
    """The pre-training stage of a run: its head, its batches and its step.

    Args:
        learner: the run's learner (it must have ``embed(x) -> (N, D)``).
        images, labels: the training set (uint8 ``(n, C, H, W)`` and labels in
            ``0..classes-1``).
        classes: the number of base classes (the head's outputs).
        batch_size: images per (global) step.
        seed: the run's seed (the batches' stream).
        device: where the head and the batches live.
    """

    def __init__(self, learner: Learner, images: np.ndarray, labels: np.ndarray, classes: int,
                 batch_size: int, seed: int, device: torch.device) -> None:
        embed = getattr(learner, "embed", None)
        if not callable(embed):
            raise TypeError(f"learner: classifier pre-training needs embed(x); "
                            f"{type(learner).__name__} has none")
        self.learner, self.images, self.labels = learner, images, labels
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self._perms: dict[int, np.ndarray] = {}
        # BatchNorm statistics per this many equal slices of a batch (1: the whole batch; a
        # rank of a torchrun job normalises its own slice)
        self.bn_groups = 1
        kind = getattr(learner, "pretrain_head", "linear")
        self.head = ClassifierHead(self._feature_size(), classes, kind).to(device)

    def _feature_size(self) -> int:
        was_training = self.learner.training
        self.learner.eval()  # running statistics: a lone image is a valid BatchNorm input
        try:
            with torch.no_grad():
                x = torch.from_numpy(self.images[:1]).to(self.device)
                return int(self.learner.embed(x).shape[1])  # type: ignore[operator]
        finally:
            self.learner.train(was_training)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            rng = seeds.numpy_rng(self.seed, seeds.PRETRAIN, epoch)
            self._perms[epoch] = rng.permutation(len(self.labels))
        return self._perms[epoch]

    def indices(self, step: int, start: int = 0, count: int | None = None) -> np.ndarray:
        """Dataset indices of items ``start .. start + count`` of global batch ``step``."""
        n = len(self.labels)
        count = self.batch_size - start if count is None else count
        first = step * self.batch_size + start
        positions = np.arange(first, first + count, dtype=np.int64)
        epochs, offsets = np.divmod(positions, n)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            at = epochs == epoch
            out[at] = self._permutation(int(epoch))[offsets[at]]
        return out

    def batch(self, step: int, start: int = 0, count: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (uint8) and labels of :meth:`indices`, on the device."""
        idx = self.indices(step, start, count)
        x = torch.from_numpy(self.images[idx]).to(self.device, non_blocking=True)
        y = torch.from_numpy(self.labels[idx]).to(self.device, non_blocking=True)
        return x, y

    def backward(self, x: torch.Tensor, y: torch.Tensor,
                 noise: tuple[float, int] | None = None) -> dict[str, torch.Tensor]:
        """Cross-entropy of the head on the learner's embeddings of ``x``, back-propagated;
        ``noise`` ``(sigma, seed)`` adds Gaussian noise to the images first (clipped to
        [0, 1]). Returns the loss and accuracy, on the device."""
        if noise is not None:
            xf = x.float() / 255.0 if x.dtype == torch.uint8 else x
            gen = torch.Generator(device=xf.device).manual_seed(noise[1])
            x = (xf + noise[0] * torch.randn(xf.shape, generator=gen, device=xf.device,
                                             dtype=xf.dtype)).clamp_(0.0, 1.0)
        features = self.learner.embed(x, self.bn_groups)  # type: ignore[operator]
        observe = getattr(self.learner, "observe_base_features", None)
        if observe is not None:
            observe(features.detach())
        logits = self.head(features.float())
        loss = F.cross_entropy(logits, y)
        loss.backward()
        accuracy = (logits.detach().argmax(1) == y).float().mean()
        return {"loss": loss.detach(), "accuracy": accuracy}


def stage_steps(share: float, total_steps: int | None) -> int | None:
    """The number of pre-training steps of a step budget (None for a time budget)."""
    if total_steps is None:
        return None
    return total_steps if share >= 1 else math.ceil(share * total_steps)
