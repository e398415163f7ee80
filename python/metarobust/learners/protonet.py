"""Prototypical networks (Snell et al., 2017), with robust prototypes.

Logits are ``-scale * distance(query embedding, class prototype)``; the loss is the
cross-entropy. Mean prototypes run the fused ``mr.ops.prototype_distances`` (one Rust call
on CPU); robust ones (median, trimmed mean, geometric median, filtered mean)
``mr.ops.prototypes`` then ``mr.ops.pairwise_distances``. Nothing in the learner fixes
ways or shots: train 20-way 5-shot, test 5-way 1-shot. A class with no support item in a
task (support-label noise can empty one) is at an infinite distance: never predicted.

BatchNorm: each task (its support and query items together) is one forward-pass group, and
batch statistics are computed per task even when a chunk of tasks is embedded in one
forward (see :func:`~metarobust.learners.base.task_batch_norm`); running statistics are
updated once per task in order, so results do not depend on ``chunk_size``. In eval mode
the running statistics are used.

>>> import metarobust as mr
>>> learner = ProtoNet(mr.models.build_model("conv4_snell", 1, 28))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import ops
from .._checks import check_bool, check_real
from .base import Learner, task_batch_norm

__all__ = ["ProtoNet"]


class ProtoNet(Learner):
    """Prototypical network.

    Args:
        backbone: embedding network ``(N, ...) -> (N, D)``.
        metric: "sqeuclidean" (Snell et al.) or "cosine" (``1 - cos``; use a ``scale``
            around 10 so the softmax is not flat).
        prototype: "mean", "median", "trimmed_mean", "geometric_median" or "filtered_mean"
            (see :func:`metarobust.ops.prototypes`; the most robust to support-label noise).
        trim: fraction cut at each end for "trimmed_mean".
        scale: logits are ``-scale * distances``.
        channels_last: run the backbone's convolutions on NHWC tensors (faster for Conv-4
            on a CPU with oneDNN; the same results to rounding).
        fuse_first_block: a pooling Conv-4 backbone trains its first block through the
            fused Rust kernels of :mod:`metarobust.models.fused` on the CPU (the same
            function and gradients to rounding).
        normalize, chunk_size: see :class:`Learner`.
    """

    def __init__(self, backbone: nn.Module, metric: str = "sqeuclidean",
                 prototype: str = "mean", *, trim: float = 0.2, scale: float = 1.0,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None, channels_last: bool = False,
                 fuse_first_block: bool = True) -> None:
        super().__init__(normalize=normalize, chunk_size=chunk_size)
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone: expected an nn.Module, got {type(backbone).__name__}")
        if metric not in ops.METRICS:
            raise ValueError(f"metric: expected one of {', '.join(ops.METRICS)}; got {metric!r}")
        if prototype not in ops.METHODS:
            raise ValueError(f"prototype: expected one of {', '.join(ops.METHODS)}; got "
                             f"{prototype!r}")
        trim = check_real(trim, "trim", 0.0, 0.5, high_open=True)
        scale = check_real(scale, "scale", 0.0, low_open=True)
        self.channels_last = check_bool(channels_last, "channels_last")
        fuse_first_block = check_bool(fuse_first_block, "fuse_first_block")
        if hasattr(backbone, "fuse_first_block"):  # torch types Module attributes as modules
            backbone.fuse_first_block = fuse_first_block  # type: ignore[assignment]
        self.backbone = (backbone.to(memory_format=torch.channels_last) if self.channels_last
                         else backbone)
        self.metric = metric
        self.prototype = prototype
        self.trim = float(trim)
        self.scale = float(scale)

    def embed(self, x: torch.Tensor, tasks: int = 1) -> torch.Tensor:
        """Embeddings ``(N, D)`` of ``N`` raw items, BatchNorm statistics per each of ``tasks``
        equal consecutive groups."""
        x = self.normalize(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with task_batch_norm(self.backbone, tasks):
            out = self.backbone(x)
        return out.reshape(x.shape[0], -1)

    def _chunk_outputs(self, chunk: Any, ways: int | None, meta: bool) -> torch.Tensor:
        if ways is None:
            raise ValueError("ways: ProtoNet classifies; pass the episodes' number of ways")
        sx, sy, qx = chunk.support_x, chunk.support_y, chunk.query_x
        c, s, q = sx.shape[0], sx.shape[1], qx.shape[1]
        with torch.set_grad_enabled(meta and torch.is_grad_enabled()):
            items = torch.cat([sx, qx], dim=1).reshape(c * (s + q), *sx.shape[2:])
            emb = self.embed(items, tasks=c).reshape(c, s + q, -1)
            # The head in float32 whatever autocast gave the backbone: in bf16, |q|^2 + |p|^2
            # - 2 q.p loses the small differences between classes' distances.
            with torch.autocast(emb.device.type, enabled=False):
                if emb.dtype in (torch.bfloat16, torch.float16):
                    emb = emb.float()
                return self._head(emb[:, :s], sy, emb[:, s:], ways)

    def _head(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
              ways: int) -> torch.Tensor:
        present = torch.nn.functional.one_hot(sy, ways).sum(1) > 0
        if not bool(present.all()):  # e.g. support-label noise emptied a class
            return self._distances_with_missing(se, sy, qe, ways, present) * -self.scale
        if self.prototype == "mean":
            dist = ops.prototype_distances(se, sy, qe, ways, self.metric)
        else:
            protos = ops.prototypes(se, sy, ways, self.prototype, trim=self.trim,
                                    metric=self.metric)
            dist = ops.pairwise_distances(qe, protos, self.metric)
        return dist * -self.scale

    def _distances_with_missing(self, se: torch.Tensor, sy: torch.Tensor, qe: torch.Tensor,
                                ways: int, present: torch.Tensor) -> torch.Tensor:
        """Distances ``(c, Q, ways)`` when some class of a task has no support item: the
        prototypes of the classes present, and an infinite distance to a missing class (a
        logit of -inf: never predicted; its queries count as errors)."""
        out = qe.new_full((*qe.shape[:2], ways), float("inf"))
        for t in range(se.shape[0]):
            cls = present[t].nonzero().flatten()
            remap = torch.full((ways,), -1, dtype=sy.dtype, device=sy.device)
            remap[cls] = torch.arange(cls.numel(), dtype=sy.dtype, device=sy.device)
            protos = ops.prototypes(se[t], remap[sy[t]], cls.numel(), self.prototype,
                                    trim=self.trim, metric=self.metric)
            out[t, :, cls] = ops.pairwise_distances(qe[t], protos, self.metric)
        return out
