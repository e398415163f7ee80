"""Test-time adaptation of a learner's evaluation, episode by episode.

:class:`TTALearner` wraps a trained learner; its ``query_logits`` / ``evaluate_batch``
(so :func:`metarobust.evaluate` and the robustness suite) adapt the model to each test
episode before predicting its queries:

- ``"none"``: the learner as it is (BatchNorm with its running statistics, in eval mode).
- ``"bn"``: BatchNorm layers normalise with the statistics of the episode's own images
  (its support and query items together, one group per episode); running statistics are
  neither used nor updated.
- ``"tent"``: TENT (Wang et al., 2021): with the ``"bn"`` statistics, ``steps`` Adam steps
  (lr ``1e-3``, betas ``(0.9, 0.999)``, no weight decay: the reference defaults) on the
  BatchNorm affine parameters only, minimising the mean entropy of the episode's query
  predictions; the queries are then predicted by the adapted model.

Every episode starts from the trained model: parameters, buffers, gradients and modes are
restored bit-exactly after each one, and Adam's state is fresh per episode.

MAML-family learners (MAML, ProtoMAML, Reptile) already normalise with each task's own
batch statistics: for them ``"bn"`` is their plain evaluation, and ``"tent"`` is refused
(their inner loop already adapts to the support set).

>>> adapted = TTALearner(learner, "tent")  # doctest: +SKIP
>>> mr.evaluate(adapted, sampler, 600)["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .._checks import check_choice, check_int, check_real
from ..learners.base import Learner, frozen_batch_norm_stats, slice_batch

__all__ = ["TTA_MODES", "TTALearner", "tent_entropy"]

TTA_MODES = ("none", "bn", "tent")


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def tent_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax of ``logits (..., ways)`` over all leading
    positions. A class at ``-inf`` (absent from the support set) has probability 0 and adds
    nothing (it would give NaN as ``0 * log 0``)."""
    logits = logits.masked_fill(~torch.isfinite(logits), -1e30)
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1).mean()


@contextlib.contextmanager
def _episode_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers use batch statistics (the learners group them per
    episode) and leave their running statistics untouched; other layers keep their mode."""
    bns = [(m, m.training) for m in _batch_norms(model)]
    for m, _ in bns:
        m.train()
    try:
        with frozen_batch_norm_stats(model):
            yield
    finally:
        for m, mode in bns:
            m.train(mode)


@contextlib.contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Parameters and buffers (values), ``requires_grad`` flags and ``.grad`` of ``model``
    as they were before the block, whatever happened inside."""
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
             if isinstance(v, torch.Tensor)}
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                if k in saved:
                    v.copy_(saved[k])
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad


class TTALearner(Learner):
    """A learner whose evaluation adapts to each test episode (see the module docstring).

    Args:
        learner: a trained classification :class:`~metarobust.learners.Learner`.
        mode: ``"none"``, ``"bn"`` or ``"tent"``.
        lr: TENT's Adam learning rate (> 0).
        steps: TENT's updates per episode (>= 1).

    Only for evaluation (``query_logits``, ``evaluate_batch``, :func:`metarobust.evaluate`);
    training goes through the wrapped learner.
    """

    def __init__(self, learner: Any, mode: str = "bn", *, lr: float = 1e-3,
                 steps: int = 1) -> None:
        super().__init__()
        if not isinstance(learner, Learner):
            raise TypeError(f"learner: expected a metarobust Learner, got "
                            f"{type(learner).__name__}")
        if isinstance(learner, TTALearner):
            raise TypeError("learner: already a TTALearner learner")
        if learner.task != "classification":
            raise ValueError(f"learner: test-time adaptation needs a classifier, got a "
                             f"{learner.task} {type(learner).__name__}")
        self.mode = check_choice(mode, "mode", TTA_MODES)
        self.lr = check_real(lr, "lr", 0.0, low_open=True)
        self.steps = check_int(steps, "steps", 1)
        self.maml_family = hasattr(learner, "test_inner_steps")
        if self.mode == "tent" and self.maml_family:
            raise ValueError(f"mode: 'tent' is not available for {type(learner).__name__}: "
                             "the MAML family adapts to each task in its inner loop and "
                             "already uses per-task BatchNorm statistics ('bn' is its plain "
                             "evaluation); use 'none' or 'bn'")
        if self.mode != "none" and not self.maml_family:
            bns = _batch_norms(learner)
            if not bns:
                raise ValueError(f"mode: {mode!r} adapts BatchNorm layers; this "
                                 f"{type(learner).__name__}'s model has none (use 'none')")
            if self.mode == "tent" and not any(m.affine for m in bns):
                raise ValueError("mode: 'tent' adapts BatchNorm affine parameters; this "
                                 "model's BatchNorm layers have none (affine=False)")
        self.learner = learner
        self.task = learner.task
        if hasattr(learner, "ways"):
            self.ways = learner.ways

    def _check_batch(self, batch: Any, ways: Any, labels: bool = True) -> int | None:
        return self.learner._check_batch(batch, ways, labels)

    def _chunk_outputs(self, chunk: Any, ways: int | None, meta: bool) -> torch.Tensor:
        if meta:
            raise RuntimeError("TTALearner is for evaluation; train the wrapped learner")
        return self.query_logits(chunk, ways)

    def query_logits(self, batch: Any, ways: int | None) -> torch.Tensor:
        """Detached query outputs ``(B, Q, ways)``, each episode's after its adaptation."""
        if self.mode == "none" or self.maml_family:
            return self.learner.query_logits(batch, ways)
        ways = self._check_batch(batch, ways)
        if self.mode == "bn":  # per-episode statistics: the learners group them by task
            with torch.no_grad(), _episode_statistics(self.learner):
                return self.learner.query_logits(batch, ways)
        outs = [self._tent_episode(slice_batch(batch, i, i + 1), ways)
                for i in range(batch.support_x.shape[0])]
        return torch.cat(outs)

    def _tent_episode(self, episode: Any, ways: int | None) -> torch.Tensor:
        """One episode's query outputs after ``steps`` TENT updates (the model restored)."""
        model = self.learner
        with _restored(model), _episode_statistics(model), torch.enable_grad():
            for p in model.parameters():
                p.requires_grad_(False)
            affine = [t for m in _batch_norms(model) if m.affine
                      for t in (m.weight, m.bias)]
            for t in affine:
                t.requires_grad_(True)
                t.grad = None
            opt = torch.optim.Adam(affine, lr=self.lr, betas=(0.9, 0.999), weight_decay=0.0)
            for _ in range(self.steps):
                loss = tent_entropy(model._chunk_outputs(episode, ways, meta=True))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                return model._chunk_outputs(episode, ways, meta=False).detach()
