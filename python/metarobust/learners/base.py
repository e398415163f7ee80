"""The shared learner interface.

A learner is an ``nn.Module`` holding every meta-parameter. The trainer owns the optimiser:

>>> learner.train()                                   # doctest: +SKIP
>>> opt.zero_grad()                                   # doctest: +SKIP
>>> stats = learner.meta_backward(batch, ways=5)      # doctest: +SKIP
>>> opt.step()                                        # doctest: +SKIP

``batch`` is an :class:`~metarobust.Episode` (or a sinusoid task batch) with a leading task
dimension ``B``, already on the learner's device. Images arrive as the sampler's float32 in
[0, 1] or as uint8 (converted here to ``x / 255``); the optional ``normalize=(mean, std)``
is applied inside the learner, so ``predict`` takes raw [0, 1] images.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import _amp
from .._checks import check_int, check_nbytes
from ._batch_norm import task_batch_norm
from ._task_inputs import INTEGER_DTYPES, check_call_labels, check_image_layout, support_labels
from ._variable import is_variable, variable_evaluate, variable_meta_backward

__all__ = ["Learner", "Task", "frozen_batch_norm_stats", "task_batch_norm"]


def _check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size: expected an int or None, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1 or None, got {chunk_size}")
    return chunk_size


def _stats(value: Any, name: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"normalize: {name} must be one or more real numbers, got "
                        f"{value!r}") from None
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"normalize: {name} must be one or more finite values, got {value!r}")
    return t


def batch_fields(batch: Any) -> list[str]:
    if dataclasses.is_dataclass(batch):
        return [f.name for f in dataclasses.fields(batch)]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return list(batch._fields)
    raise TypeError(f"batch: expected an Episode (or a task NamedTuple), got "
                    f"{type(batch).__name__}")


def check_batch(batch: Any) -> None:
    """An Episode or task NamedTuple whose images and labels are tensors (TypeError naming
    the field otherwise)."""
    batch_fields(batch)
    for name in ("support_x", "support_y", "query_x", "query_y"):
        t = getattr(batch, name, None)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"batch.{name}: expected a torch.Tensor, got {type(t).__name__}")


def replace_fields(batch: Any, **fields: Any) -> Any:
    """A copy of a batch (an Episode dataclass or a NamedTuple) with ``fields`` replaced."""
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(batch, **fields)
    return batch._replace(**fields)


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Tasks ``start:stop`` of a batch (an Episode dataclass or a NamedTuple of tensors)."""
    names = batch_fields(batch)
    return replace_fields(batch, **{n: getattr(batch, n)[start:stop] for n in names})


# ---------------------------------------------------------------- per-task BatchNorm

@contextlib.contextmanager
def frozen_batch_norm_stats(model: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers of ``model`` in training mode normalise with
    batch statistics as usual but leave their running statistics (and
    ``num_batches_tracked``) untouched. Nothing is written to the statistics, so graphs
    built inside stay valid for a backward after the block (native BatchNorm saves the
    running statistics for its backward; restoring them in place afterwards would break it).
    """
    switched = [m for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
                and m.track_running_stats]
    for m in switched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in switched:
            m.track_running_stats = True


@contextlib.contextmanager
def _constant_parameters(module: nn.Module) -> Iterator[None]:
    """Within the block, ``module``'s parameters do not require grad (restored on exit)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# ---------------------------------------------------------------- the base class

class Learner(nn.Module):
    """Base class of the learners.

    Args:
        normalize: optional ``(mean, std)``, one value or one per channel, applied to the
            [0, 1] inputs inside the learner (``(x - mean) / std``).
        chunk_size: tasks processed together in ``meta_backward`` / ``evaluate_batch``
            (None: the whole batch at once; MAML off vmap: one task at a time). Smaller
            chunks bound peak memory; gradients are the same.

    Subclasses implement ``_chunk_outputs(chunk, ways, meta)`` returning the query outputs
    ``(c, Q, ways)`` (``meta``: keep the graph to the meta-parameters) and ``_predict_one``.
    """

    task = "classification"
    # the resolved TrainConfig of a run loaded by metarobust.load_run, else unset
    config: Any

    def __init__(self, normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None) -> None:
        super().__init__()
        self.chunk_size = _check_chunk(chunk_size)
        if normalize is not None:
            if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
                raise ValueError(f"normalize: expected (mean, std) or None, got {normalize!r}")
            mean, std = _stats(normalize[0], "mean"), _stats(normalize[1], "std")
            if bool((std <= 0).any()):
                raise ValueError(f"normalize: std must be > 0, got {normalize[1]!r}")
            self.register_buffer("norm_mean", mean.float())
            self.register_buffer("norm_std", std.float())
        else:
            self.norm_mean: torch.Tensor | None = None
            self.norm_std: torch.Tensor | None = None

    # ------------------------------------------------------------ helpers

    def _param_ref(self) -> torch.Tensor:
        """A tensor with the learner's dtype and device (float32 CPU if it has none)."""
        for p in self.parameters():
            return p
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return torch.empty(0)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Sampler output to model input: uint8 -> float / 255, then ``(x - mean) / std``."""
        ref = self._param_ref()
        if x.dtype == torch.uint8:
            x = x.to(ref.dtype) / 255.0
        elif not x.is_floating_point():
            raise TypeError(f"x: expected float images in [0, 1] or uint8, got {x.dtype}")
        if self.norm_mean is not None and self.norm_std is not None:
            if x.dim() < 2:
                raise ValueError(f"x: expected (n, C, ...) inputs, got shape {tuple(x.shape)}")
            c = self.norm_mean.numel()
            if c != 1 and x.shape[1] != c:
                raise ValueError(f"normalize: {c} channel statistics for inputs with "
                                 f"{x.shape[1]} channels")
            shape = (1, -1, *([1] * (x.dim() - 2)))
            x = ((x - self.norm_mean.to(x.dtype).reshape(shape))
                 / self.norm_std.to(x.dtype).reshape(shape))
        return x

    def _check_images(self, x: torch.Tensor, name: str) -> None:
        """Float images must have the dtype of the learner's parameters (if it has any),
        unless autocast casts them (torch's own error names neither)."""
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise TypeError(f"{name}: expected float images in [0, 1] or uint8, got {x.dtype}")
        ref = next((p for p in self.parameters() if p.is_floating_point()), None)
        if (ref is not None and x.is_floating_point() and x.dtype != ref.dtype
                and _amp.autocast_dtype(x.device.type) is None):
            raise TypeError(f"{name}: {x.dtype} images for a learner with {ref.dtype} "
                            f"parameters; pass uint8 or {ref.dtype} images")

    def _check_batch(self, batch: Any, ways: Any, labels: bool = True) -> int | None:
        """Shapes and dtypes; with ``labels``, also the label range (reads it on the host).
        Returns ``ways`` as an int (None for regression)."""
        check_batch(batch)
        sx, sy, qx, qy = batch.support_x, batch.support_y, batch.query_x, batch.query_y
        self._check_images(sx, "batch.support_x")
        self._check_images(qx, "batch.query_x")
        if sx.dim() < 3 or qx.dim() != sx.dim():
            raise ValueError(f"batch: expected support_x/query_x with a leading task dimension "
                             f"(B, n, ...), got {tuple(sx.shape)} and {tuple(qx.shape)}")
        b = sx.shape[0]
        if not (sy.shape[:2] == sx.shape[:2] and qy.shape[:2] == qx.shape[:2]
                and qx.shape[0] == b and sx.shape[2:] == qx.shape[2:]):
            raise ValueError(f"batch: inconsistent shapes support_x {tuple(sx.shape)}, support_y "
                             f"{tuple(sy.shape)}, query_x {tuple(qx.shape)}, query_y "
                             f"{tuple(qy.shape)}")
        if self.task == "classification":
            ways = check_int(ways, "ways", 1)
            if ways > sx.shape[1]:  # an episode has at least one support item per class
                raise ValueError(f"ways: {ways} classes for {sx.shape[1]} support items per "
                                 "task; an episode has at least one support item per class")
            # the largest per-class tensor a learner makes: one-hot labels or logits
            check_nbytes(8 * b * max(sx.shape[1], qx.shape[1]) * ways, "ways",
                         f"{ways}-way outputs for {b} tasks of {sx.shape[1]} support and "
                         f"{qx.shape[1]} query items")
            if sy.dim() != 2 or qy.dim() != 2:
                raise ValueError("batch: labels must be (B, n) integer tensors")
            for y, name in ((sy, "support_y"), (qy, "query_y")):
                if y.dtype not in INTEGER_DTYPES:
                    raise TypeError(f"batch.{name}: expected integer labels, got {y.dtype}")
            # one device sync for both label sets
            if labels and bool(((sy < 0) | (sy >= ways)).any() | ((qy < 0) | (qy >= ways)).any()):
                for y, name in ((sy, "support_y"), (qy, "query_y")):
                    lo, hi = int(y.min()), int(y.max())
                    if lo < 0 or hi >= ways:
                        raise ValueError(f"batch.{name}: labels must be in 0..{ways - 1} "
                                         f"(ways={ways}), got values in {lo}..{hi}")
        return ways if self.task == "classification" else None


    def _default_chunk(self, x: torch.Tensor) -> int | None:
        """Tasks per chunk when ``chunk_size`` is None (None: the whole batch)."""
        return None

    def _chunks(self, b: int, x: torch.Tensor | None = None) -> Iterator[tuple[int, int]]:
        step = self.chunk_size or (self._default_chunk(x) if x is not None else None) or b
        for start in range(0, b, step):
            yield start, min(b, start + step)

    def _task_losses(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
        """Per-task query loss and accuracy (classification) or MSE (regression)."""
        c, q = out.shape[:2]
        if self.task == "regression":
            err = F.mse_loss(out, y.to(out.dtype).reshape(out.shape), reduction="none")
            loss = err.reshape(c, -1).mean(1)
            return loss, loss.detach()
        loss = F.cross_entropy(out.reshape(c * q, -1), y.reshape(-1), reduction="none")
        acc = (out.detach().argmax(-1) == y).to(out.dtype).mean(1)
        return loss.reshape(c, q).mean(1), acc

    # ------------------------------------------------------------ the interface

    def _chunk_outputs(self, chunk: Any, ways: int | None, meta: bool) -> torch.Tensor:
        raise NotImplementedError

    def meta_backward(self, batch: Any, ways: int | None, *,
                      sync: bool = True) -> dict[str, Any]:
        """Meta-training loss on ``batch`` (mean over its tasks), back-propagated into the
        meta-parameters' ``.grad`` (accumulating; the caller zeroes and steps).

        Returns ``{"loss", "accuracy"}`` averaged over tasks (regression: ``{"loss", "mse"}``)
        as floats. ``sync=False`` returns them as 0-d tensors on the batch's device instead
        and skips the label-range check, the two host reads of a step: on a GPU the host can
        then queue the next step while this one runs. For batches whose labels are known to
        be in range (an :class:`EpisodeSampler`'s); a bad label then fails inside the loss.
        A :class:`~metarobust.VariableEpisode` batch (``ways=None``) runs episode by episode;
        learners with a fixed number of ways (MAML) refuse it with a ValueError.
        """
        if not torch.is_grad_enabled():
            raise RuntimeError("meta_backward: gradients are disabled (called under "
                               "torch.no_grad()); use evaluate_batch to evaluate")
        if is_variable(batch):
            return variable_meta_backward(self, batch, ways, sync)
        ways = self._check_batch(batch, ways, labels=sync)

        def chunk_losses(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            chunk = slice_batch(batch, start, stop)
            return self._task_losses(self._chunk_outputs(chunk, ways, meta=True),
                                     chunk.query_y)

        key = "mse" if self.task == "regression" else "accuracy"
        return self.backward_chunks(batch, chunk_losses, key, sync)

    def backward_chunks(self, batch: Any,
                        chunk_losses: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
                        key: str = "accuracy", sync: bool = True) -> dict[str, Any]:
        """Back-propagates the mean over ``batch``'s tasks of the per-task losses that
        ``chunk_losses(start, stop)`` returns for tasks ``start:stop`` (with a per-task
        metric), chunk by chunk
        (``chunk_size``); returns ``{"loss", key}`` averaged over the tasks, floats if
        ``sync`` else 0-d tensors. The loop of :meth:`meta_backward`, for objectives of
        one's own (e.g. :func:`metarobust.robust.trades_backward`)."""
        b = batch.support_x.shape[0]
        total_loss: Any = 0.0
        total_metric: Any = 0.0
        for start, stop in self._chunks(b, batch.support_x):
            loss, metric = chunk_losses(start, stop)
            (loss.sum() / b).backward()
            total_loss = total_loss + loss.detach().sum()
            total_metric = total_metric + metric.sum()
        means = {"loss": total_loss / b, key: total_metric / b}
        return {k: float(v) for k, v in means.items()} if sync else means

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor,
                query_x: torch.Tensor, ways: int | None = None) -> torch.Tensor:
        """Differentiable query logits, ``learner(support_x, support_y, query_x)``: the
        building block of a training loop of one's own (``loss.backward()`` reaches every
        meta-parameter; MAML adapts inside, keeping the inner loop's graph as ``order``
        says).

        One task: ``support_x (n, C, H, W)``, ``support_y (n,)``, ``query_x (m, C, H, W)``
        give ``(m, ways)``. A batch of tasks, with a leading task dimension ``B`` on all
        three (an :class:`~metarobust.Episode` batch's fields), gives ``(B, m, ways)``.
        Images are float in [0, 1] or uint8, on the learner's device. ``ways``: default
        ``max(support_y) + 1`` (MAML: it must be the classifier's ``ways``). Regression
        learners take targets ``(n, outputs)`` or ``(B, n, outputs)``. MAML takes
        ``inner_steps`` in training mode and ``test_inner_steps`` in eval mode. For
        detached evaluation logits use
        :meth:`predict` (one task) or :meth:`query_logits` (a batch).
        """
        if not isinstance(support_y, torch.Tensor):
            raise TypeError(f"support_y: expected a torch.Tensor, got "
                            f"{type(support_y).__name__}")
        lead = check_call_labels(support_x, support_y, self.task == "classification")
        self._check_task_images(support_x, support_y, query_x, lead)
        if ways is None and self.task == "classification":
            if support_y.numel() == 0:
                raise ValueError("support_y: the support set is empty")
            ways = (int(support_y.max()) + 1 if lead
                    else support_labels(support_y, support_x.shape[0])[1])
        if self.task == "classification":
            support_y = support_y.long()  # after the checks: integer labels of any width
        if not lead:
            support_x, support_y, query_x = support_x[None], support_y[None], query_x[None]
        dummy = torch.zeros(query_x.shape[:2], device=query_x.device,
                            dtype=torch.int64 if self.task == "classification" else torch.float)
        task = Task(support_x, support_y, query_x, dummy)
        ways = self._check_batch(task, ways)
        out = torch.cat([self._call_outputs(slice_batch(task, start, stop), ways)
                         for start, stop in self._chunks(support_x.shape[0], support_x)])
        return out if lead else out[0]

    def _call_outputs(self, chunk: Any, ways: int | None) -> torch.Tensor:
        """The outputs of :meth:`forward` for a chunk of tasks (MAML overrides it)."""
        return self._chunk_outputs(chunk, ways, meta=True)

    def query_logits(self, batch: Any, ways: int | None) -> torch.Tensor:
        """Detached query outputs ``(B, Q, ways)`` for evaluation (after adaptation with
        ``test_inner_steps``, for MAML): no graph to the parameters, whatever the grad mode.
        The differentiable outputs are the learner's call, ``learner(sx, sy, qx)``."""
        ways = self._check_batch(batch, ways)
        outs = []
        for start, stop in self._chunks(batch.support_x.shape[0], batch.support_x):
            outs.append(self._chunk_outputs(slice_batch(batch, start, stop), ways,
                                            meta=False).detach())
        return torch.cat(outs)

    def attack_logits(self, batch: Any, ways: int | None, *,
                      inner_steps: int | None = None) -> torch.Tensor:
        """Query outputs ``(B, Q, ways)`` for adversarial attacks: differentiable with respect
        to ``batch.support_x`` and ``batch.query_x`` (the caller sets ``requires_grad`` on
        float images), with the learner's parameters as constants (no parameter ``.grad`` is
        ever touched, whatever the caller back-propagates).

        Evaluation-time behaviour in the learner's current mode (normally eval): ProtoNet
        runs its plain forward; MAML adapts with ``test_inner_steps`` (``inner_steps``
        overrides it) and keeps the inner loop's graph (second order, whatever ``order``),
        so gradients flow through the adaptation to the support images. BatchNorm running
        statistics are left unchanged (restored if the learner is in training mode).
        Gradient mode is always on inside.
        """
        ways = self._check_batch(batch, ways)
        if inner_steps is not None:
            if isinstance(inner_steps, bool) or not isinstance(inner_steps, int):
                raise TypeError(f"inner_steps: expected an int >= 0 or None, got "
                                f"{inner_steps!r} ({type(inner_steps).__name__})")
            if inner_steps < 0:
                raise ValueError(f"inner_steps: must be >= 0, got {inner_steps}")
        outs = []
        with torch.enable_grad(), frozen_batch_norm_stats(self):
            for start, stop in self._chunks(batch.support_x.shape[0], batch.support_x):
                outs.append(self._attack_outputs(slice_batch(batch, start, stop), ways,
                                                 inner_steps))
        return torch.cat(outs)

    def _attack_outputs(self, chunk: Any, ways: int | None,
                        inner_steps: int | None) -> torch.Tensor:
        """:meth:`attack_logits` of one chunk; here the meta forward with the parameters
        made constant (MAML overrides it)."""
        with _constant_parameters(self):
            return self._chunk_outputs(chunk, ways, meta=True)

    def evaluate_batch(self, batch: Any, ways: int | None) -> torch.Tensor:
        """Query accuracy of each task ``(B,)`` (regression: query MSE of each task).
        A :class:`~metarobust.VariableEpisode` batch takes ``ways=None``."""
        if is_variable(batch):
            return variable_evaluate(self, batch, ways)
        out = self.query_logits(batch, ways)
        with torch.no_grad():
            return self._task_losses(out, batch.query_y)[1]

    def _check_task_images(self, support_x: Any, support_y: Any, query_x: Any,
                           lead: int = 0) -> None:
        """One task's tensors (``lead=1``: a batch of tasks) for :meth:`predict` and the
        call: types, shapes, finite float images, and for classifiers ``(n, C, H, W)``
        images in [0, 1]."""
        for t, name in ((support_x, "support_x"), (support_y, "support_y"),
                        (query_x, "query_x")):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if lead:
            why = f"; support_y {tuple(support_y.shape)} makes a batch of tasks"
            if support_x.dim() < 3 or query_x.dim() != support_x.dim():
                raise ValueError(f"support_x, query_x: expected a batch of tasks (B, n, C, H, W) "
                                 f"and (B, m, C, H, W), got {tuple(support_x.shape)} and "
                                 f"{tuple(query_x.shape)}{why}")
            if query_x.shape[0] != support_x.shape[0]:
                raise ValueError(f"query_x: {query_x.shape[0]} tasks, support_x has "
                                 f"{support_x.shape[0]}{why}")
            support_x, query_x = support_x.flatten(0, 1), query_x.flatten(0, 1)
        if support_x.dim() < 2 or query_x.dim() != support_x.dim():
            raise ValueError(f"support_x, query_x: expected (n, C, H, W) and (m, C, H, W), got "
                             f"{tuple(support_x.shape)} and {tuple(query_x.shape)}")
        if support_x.shape[1:] != query_x.shape[1:]:
            raise ValueError(f"query_x: item shape {tuple(query_x.shape[1:])} differs from "
                             f"support_x's {tuple(support_x.shape[1:])}")
        if query_x.shape[0] == 0:
            raise ValueError("query_x: needs at least one item")
        for x, name in ((support_x, "support_x"), (query_x, "query_x")):
            self._check_images(x, name)
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name}: holds NaN or inf")
            if self.task == "classification":
                check_image_layout(x, name, lead)


    def predict(self, support_x: torch.Tensor, support_y: torch.Tensor,
                query_x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n_query, ways)`` for one task of the user's own, in eval mode.

        ``support_x (n, C, H, W)`` images as the sampler gives them (float in [0, 1], or
        uint8), ``support_y (n,)`` labels covering ``0..ways-1``, ``query_x (m, C, H, W)``.
        Float images outside [0, 1] (0-255 values) and images without a channel dimension
        are refused (ValueError). The logits are detached; the call gives them with a graph.
        """
        self._check_task_images(support_x, support_y, query_x)
        ways = None
        if self.task == "classification":
            support_y, ways = support_labels(support_y, support_x.shape[0])
        elif support_y.shape[0] != support_x.shape[0]:
            raise ValueError(f"support_y: {support_y.shape[0]} targets for "
                             f"{support_x.shape[0]} inputs")
        device = self._param_ref().device
        was_training = self.training
        self.eval()
        try:
            out = self._predict_one(support_x.to(device), support_y.to(device),
                                    query_x.to(device), ways)
        finally:
            self.train(was_training)
        return out.detach().to(query_x.device)

    def _predict_one(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                     ways: int | None) -> torch.Tensor:
        task = Task(sx[None], sy[None], qx[None], None)
        return self._chunk_outputs(task, ways, meta=False)[0]


class Task(NamedTuple):
    """A minimal batch of tasks (leading dimension B), for ``predict`` and tests."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: Any
