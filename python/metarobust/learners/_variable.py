"""Learners on batches of variable-way episodes (:class:`~metarobust.VariableEpisode`):
each episode runs through the learner on its own, unpadded, with its own number of ways
(their sizes differ, so a padded forward would spend most of its work on padding). A
learner whose classifier has a fixed number of ways (MAML) refuses them."""

from __future__ import annotations

from typing import Any

import torch

from ..variable_episodes import VariableEpisode

__all__ = ["check_variable", "is_variable", "refuse_variable", "variable_evaluate",
           "variable_meta_backward"]


def is_variable(batch: Any) -> bool:
    return isinstance(batch, VariableEpisode)


def check_variable(learner: Any, batch: VariableEpisode, ways: Any) -> None:
    """A named error where ``learner`` cannot take variable-way episodes, or ``ways`` is
    given (each episode carries its own)."""
    fixed = getattr(learner, "ways", None)
    if learner.task != "classification" or fixed is not None:
        lo, hi = int(batch.ways.min()), int(batch.ways.max())
        raise ValueError(f"batch: variable-way episodes ({lo}..{hi} ways) need a learner "
                         f"without a fixed number of ways; this {type(learner).__name__}'s "
                         f"classifier has {fixed} outputs. Use a metric learner such as "
                         "ProtoNet, or fixed-way episodes (EpisodeSampler)")
    if ways is not None:
        raise ValueError(f"ways: variable-way episodes carry their own (batch.ways); pass "
                         f"ways=None, got {ways!r}")
    if batch.ways.dim() != 1:
        raise ValueError("batch: expected a batch of variable-way episodes (a sample_batch "
                         "result), got a single episode; use sampler.sample_batch(i, 1)")


def refuse_variable(learner: Any, batch: Any) -> None:
    """The MAML family's meta-training takes fixed-way batches only: a named error for a
    batch of variable-way episodes."""
    if is_variable(batch):
        lo, hi = int(batch.ways.min()), int(batch.ways.max())
        raise ValueError(f"batch: variable-way episodes ({lo}..{hi} ways) cannot meta-train "
                         f"a {type(learner).__name__}: the MAML family meta-trains on batches "
                         "of fixed-way episodes (EpisodeSampler); metric learners such as "
                         "ProtoNet take variable-way ones")


def _episodes(batch: VariableEpisode) -> list[tuple[Any, int]]:
    return [(batch[j].as_episode(), int(batch.ways[j])) for j in range(len(batch))]


def variable_meta_backward(learner: Any, batch: VariableEpisode, ways: Any,
                           sync: bool) -> dict[str, Any]:
    """:meth:`Learner.meta_backward` over variable-way episodes: the mean over episodes of
    each episode's query loss, back-propagated one episode at a time."""
    check_variable(learner, batch, ways)
    b = len(batch)
    total_loss: Any = 0.0
    total_acc: Any = 0.0
    for ep, w in _episodes(batch):
        w = learner._check_batch(ep, w, labels=sync)
        out = learner._chunk_outputs(ep, w, meta=True)
        loss, acc = learner._task_losses(out, ep.query_y)
        (loss.sum() / b).backward()
        total_loss = total_loss + loss.detach().sum()
        total_acc = total_acc + acc.sum()
    means = {"loss": total_loss / b, "accuracy": total_acc / b}
    return {k: float(v) for k, v in means.items()} if sync else means


def variable_evaluate(learner: Any, batch: VariableEpisode, ways: Any) -> torch.Tensor:
    """:meth:`Learner.evaluate_batch` over variable-way episodes: each one's query accuracy
    ``(B,)``."""
    check_variable(learner, batch, ways)
    accs = []
    for ep, w in _episodes(batch):
        out = learner.query_logits(ep, w)
        with torch.no_grad():
            accs.append(learner._task_losses(out, ep.query_y)[1])
    return torch.cat(accs)
