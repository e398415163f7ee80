"""Batches of drawn regression tasks (sinusoid) for the trainer, with the interface of
:meth:`~metarobust.EpisodeSampler.batches`."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["TaskBatches"]


class TaskBatches:
    """Consecutive batches of a task family without a Rust sampler (sinusoid regression),
    with the interface of :meth:`EpisodeSampler.batches` that the trainer uses."""

    def __init__(self, tasks: Any, batch_size: int, start: int = 0,
                 stride: int | None = None, **_: Any) -> None:
        self.tasks, self.batch_size, self.position = tasks, batch_size, start
        self.stride = stride or batch_size

    def __next__(self) -> Any:
        batch = self.tasks.sample_batch(self.position, self.batch_size)
        self.position += self.stride
        return _Movable(batch)

    def close(self) -> None:
        pass


class _Movable:
    """A NamedTuple batch with the ``.to(device)`` of :class:`Episode`."""

    def __init__(self, batch: Any) -> None:
        self.batch = batch

    def to(self, device: torch.device, non_blocking: bool = False) -> Any:
        return type(self.batch)(*(t.to(device, non_blocking=non_blocking) for t in self.batch))
