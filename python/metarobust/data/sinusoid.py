"""The sinusoid regression task family of MAML (Finn et al., 2017).

Each task is ``y = A * sin(x - phase)`` with amplitude ``A ~ U[0.1, 5]``, phase
``~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``. Task ``i`` is a pure function of ``(seed, i)``:
its numbers come from ``numpy.random.Generator(Philox(key=seed, counter=[0, i, 0, 0]))``,
drawn in the order amplitude, phase, then the ``shots + queries`` inputs. (``i`` sits in the
second counter word so that the streams of tasks ``i`` and ``i + 1`` never overlap; putting
it in the lowest word would make task ``i + 1`` a shifted copy of task ``i``.)

>>> tasks = sinusoid(shots=5, queries=10, seed=0)
>>> t = tasks.sample(3)
>>> t.support_x.shape, t.query_y.shape
(torch.Size([5, 1]), torch.Size([10, 1]))
>>> b = tasks.sample_batch(2, 4)
>>> b.support_x.shape
torch.Size([4, 5, 1])
>>> bool((b.support_x[1] == t.support_x).all())
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_int as _check_int
from .._checks import check_nbytes

__all__ = [
    "AMPLITUDE_RANGE",
    "PHASE_RANGE",
    "X_RANGE",
    "SinusoidTask",
    "SinusoidTasks",
    "sinusoid",
]

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
_MAX_SEED = 2**64 - 1
# Bytes per point of a task while it is made: x and y in float64, then in float32.
_POINT_BYTES = 24


class SinusoidTask(NamedTuple):
    """One task (or a batch of tasks, with a leading dimension), all float32 tensors."""

    support_x: torch.Tensor  # (K, 1)
    support_y: torch.Tensor  # (K, 1)
    query_x: torch.Tensor  # (Q, 1)
    query_y: torch.Tensor  # (Q, 1)
    amplitude: torch.Tensor  # () or (B,)
    phase: torch.Tensor  # () or (B,)


class SinusoidTasks:
    """The sinusoid family with ``shots`` support and ``queries`` query points per task.

    Args:
        shots: support points per task (>= 1).
        queries: query points per task (>= 1).
        seed: any int in 0..2**64-1; with the task index it fixes each task.
    """

    def __init__(self, shots: int, queries: int, seed: int = 0) -> None:
        self.shots = _check_int(shots, "shots", 1)
        self.queries = _check_int(queries, "queries", 1)
        self.seed = _check_int(seed, "seed", 0, _MAX_SEED)
        check_nbytes((self.shots + self.queries) * _POINT_BYTES, "shots, queries",
                     f"one task of {self.shots} + {self.queries} points")

    def __repr__(self) -> str:
        return f"SinusoidTasks(shots={self.shots}, queries={self.queries}, seed={self.seed})"

    def _draw(self, i: int) -> tuple[float, float, np.ndarray]:
        counter = np.array([0, i, 0, 0], dtype=np.uint64)
        rng = np.random.Generator(np.random.Philox(key=self.seed, counter=counter))
        amplitude = rng.uniform(*AMPLITUDE_RANGE)
        phase = rng.uniform(*PHASE_RANGE)
        x = rng.uniform(*X_RANGE, size=self.shots + self.queries)
        return amplitude, phase, x

    def _arrays(self, start: int, count: int):
        k, n = self.shots, self.shots + self.queries
        xs = np.empty((count, n), dtype=np.float64)
        amps = np.empty(count, dtype=np.float64)
        phases = np.empty(count, dtype=np.float64)
        for j in range(count):
            amps[j], phases[j], xs[j] = self._draw(start + j)
        ys = amps[:, None] * np.sin(xs - phases[:, None])
        xs32 = torch.from_numpy(xs.astype(np.float32)).unsqueeze(-1)
        ys32 = torch.from_numpy(ys.astype(np.float32)).unsqueeze(-1)
        return (
            xs32[:, :k].contiguous(),
            ys32[:, :k].contiguous(),
            xs32[:, k:].contiguous(),
            ys32[:, k:].contiguous(),
            torch.from_numpy(amps.astype(np.float32)),
            torch.from_numpy(phases.astype(np.float32)),
        )

    def sample(self, i: int) -> SinusoidTask:
        """Task ``i`` (``i`` in 0..2**64-1): a pure function of ``(seed, i)``."""
        i = _check_int(i, "i", 0, _MAX_SEED)
        return SinusoidTask(*(t[0] for t in self._arrays(i, 1)))

    def sample_batch(self, start: int, count: int) -> SinusoidTask:
        """Tasks ``start .. start+count-1`` stacked: ``b.support_x[j]`` equals
        ``sample(start + j).support_x``, and so on for every field."""
        start = _check_int(start, "start", 0, _MAX_SEED)
        count = _check_int(count, "count", 0, _MAX_SEED - start + 1)
        check_nbytes(count * (self.shots + self.queries) * _POINT_BYTES, "count",
                     f"{count} tasks of {self.shots} + {self.queries} points")
        return SinusoidTask(*self._arrays(start, count))


def sinusoid(shots: int = 5, queries: int = 10, seed: int = 0) -> SinusoidTasks:
    """The MAML sinusoid task family (see :class:`SinusoidTasks`).

    >>> sinusoid(shots=10).sample(0).support_x.shape
    torch.Size([10, 1])
    """
    return SinusoidTasks(shots, queries, seed)
