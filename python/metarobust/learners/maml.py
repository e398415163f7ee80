"""MAML (Finn et al., 2017) and its first-order, Meta-SGD (Li et al., 2017) and ANIL
(Raghu et al., 2020) variants.

The classifier is ``head(backbone(x))`` with a linear head of ``ways`` outputs (regression:
``outputs``). For each task the inner loop takes ``inner_steps`` gradient steps on the
support loss from the meta-parameters; the meta-loss is the query loss at the adapted
parameters, averaged over the tasks.

* ``order="second"``: the meta-gradient goes through the inner updates (Hessian terms).
* ``order="first"``: inner gradients are constants (stop-gradient): the meta-gradient is
  the query-loss gradient at the adapted parameters (FOMAML).
* ``variant="metasgd"``: per-parameter (element-wise) inner learning rates, initialised to
  ``inner_lr`` and meta-learned.
* ``variant="anil"``: the inner loop adapts only the head; the backbone's features are
  computed once per task (support and query) and meta-learned through the query loss.

Three equivalent execution paths: ``path="vmap"`` runs the whole (chunk of the) meta-batch
at once with ``torch.func`` (``functional_call``, ``grad``, ``vmap``); ``path="loop"`` runs
the tasks one after the other with ``torch.autograd.grad`` (the reference);
``path="threads"`` runs the loop's per-task work on ``torch.get_num_threads()`` Python
threads with one intra-op thread each (torch releases the GIL inside its kernels), each
task's meta-gradient taken separately and the gradients summed in task order, so the result
does not depend on the thread count. A Conv-4 task is too small to keep several cores busy
inside one operation, so task-level parallelism is what pays on a CPU. ``"auto"`` takes
vmap on CUDA; on CPU, vmap for networks without convolutions (a small MLP's tasks are all
per-operation overhead, which vmap batches away), else the threads path when torch has more
than one thread, else the loop.

BatchNorm: the backbone's BatchNorm layers are converted in place with
``torch.func.replace_all_batch_norm_modules_``: no running statistics, every forward
normalises with the statistics of its own input, in training and in evaluation, as in
Finn et al.'s reference code. Each forward sees one task's support set (or query set) only,
on both paths, so tasks never share statistics, and the vmap path needs no buffer updates.
(Evaluation is transductive over a task's query set, as in that code.) The vmap path
computes BatchNorm from elementary ops (see ``_batch_norm_decomposed``) because second
derivatives through ``F.batch_norm`` under ``vmap(grad)`` are wrong in current torch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .. import _amp
from .._checks import check_bool, check_nbytes, check_real
from ..models import fused
from ._task_inputs import feature_size
from ._variable import refuse_variable
from .base import Learner, check_batch, slice_batch

__all__ = ["MAML", "ORDERS", "PATHS", "VARIANTS"]

ORDERS = ("second", "first")
VARIANTS = ("maml", "metasgd", "anil")
PATHS = ("vmap", "loop", "threads", "auto")

Params = dict[str, torch.Tensor]

# Worker threads of the threads path run on their own copy of the network: functional_call
# swaps parameters into the module object while it runs, so threads must not share one.
_WORKER = threading.local()


def _check_steps(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name}: must be >= 0, got {value}")
    return value


def _check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}; got {value!r}")
    return value


def _batch_norm_decomposed(module: nn.modules.batchnorm._BatchNorm,
                           x: torch.Tensor) -> torch.Tensor:
    """Training-mode BatchNorm (batch statistics, no running statistics) from elementary ops.

    The vmap path uses it because, under ``vmap`` of ``torch.func.grad``, second derivatives
    through ``F.batch_norm`` come out wrong (torch 2.15, CPU: the meta-gradient of a
    Linear + BatchNorm1d net differed from finite differences by ~5%, the loop path agreed
    to 1e-9); these ops differentiate correctly at any order.
    """
    dims = (0, *range(2, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + module.eps)
    if module.affine:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        y = y * module.weight.reshape(shape) + module.bias.reshape(shape)
    return y


@contextlib.contextmanager
def _decomposed_batch_norm(model: nn.Module) -> Iterator[None]:
    patched = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in patched:
        m.forward = functools.partial(_batch_norm_decomposed, m)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def _check_outputs(task: str, ways: Any, outputs: Any) -> int:
    """The classifier's outputs: ``ways`` for classification, ``outputs`` for regression;
    both checked whatever the task, so that neither is silently unused."""
    if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
        raise ValueError(f"outputs: expected an int >= 1, got {outputs!r}")
    if task == "regression":
        if ways is not None:
            raise ValueError(f"ways: a regression MAML has no ways (its outputs are "
                             f"`outputs`), got {ways!r}")
        return outputs
    if isinstance(ways, bool) or not isinstance(ways, int) or ways < 1:
        raise ValueError(f"ways: MAML's classifier needs a fixed number of ways "
                         f"(int >= 1), got {ways!r}")
    return ways


class _Classifier(nn.Module):
    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


class MAML(Learner):
    """Model-agnostic meta-learning and its variants.

    Args:
        model: any backbone ``nn.Module`` ``(N, ...) -> (N, ...)`` whose outputs flatten to
            ``(N, features)`` (its BatchNorm layers are converted in place, see the module
            docstring); ``features`` is its ``out_features`` or found with ``input_shape``.
        inner_lr: inner-loop step size (Meta-SGD: the initial per-parameter step sizes).
        inner_steps: inner steps in meta-training (>= 0).
        test_inner_steps: inner steps in evaluation and ``predict`` (default: inner_steps).
        order: "second" or "first".
        variant: "maml", "metasgd" or "anil".
        ways: classifier outputs; batches must have this many ways (classification).
        head: "linear" (a new ``nn.Linear(features, ways)``) or a module mapping
            the backbone's features to the outputs.
        input_shape: the shape of one input, e.g. ``(C, H, W)``, for a backbone without an
            int ``out_features``: the linear head's size is then found by a dry run of the
            backbone on two zero inputs (in eval mode, nothing changed).
        task: "classification" (cross-entropy, accuracy) or "regression" (MSE; targets
            ``(B, n, outputs)``, e.g. ``mr.data.sinusoid``).
        outputs: regression outputs (classification uses ``ways``).
        path: "vmap", "loop", "threads" or "auto" (vmap on CUDA; on CPU vmap for networks
            without convolutions, else threads, or the loop with a single torch thread).
        fuse_first_block: a Conv-4 backbone runs its first block through the fused Rust
            kernels of :mod:`metarobust.models.fused` on the CPU where the graph is
            differentiated once (query passes, first-order inner steps, evaluation); the
            same function and gradients to rounding.
        normalize, chunk_size: see :class:`Learner`.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1,
                 test_inner_steps: int | None = None, order: str = "second",
                 variant: str = "maml", *, ways: int | None = None,
                 head: str | nn.Module = "linear", task: str = "classification",
                 outputs: int = 1, path: str = "auto",
                 input_shape: Sequence[int] | None = None,
                 normalize: Sequence[Any] | None = None,
                 chunk_size: int | None = None, fuse_first_block: bool = True) -> None:
        super().__init__(normalize=normalize, chunk_size=chunk_size)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        fuse_first_block = check_bool(fuse_first_block, "fuse_first_block")
        if hasattr(model, "fuse_first_block"):  # torch types Module attributes as modules
            model.fuse_first_block = fuse_first_block  # type: ignore[assignment]
        self.inner_lr = check_real(inner_lr, "inner_lr", 0.0)
        self.inner_steps = _check_steps(inner_steps, "inner_steps")
        self.test_inner_steps = _check_steps(
            self.inner_steps if test_inner_steps is None else test_inner_steps,
            "test_inner_steps")
        self.order = _check_choice(order, "order", ORDERS)
        self.variant = _check_choice(variant, "variant", VARIANTS)
        self.path = _check_choice(path, "path", PATHS)
        self.task = _check_choice(task, "task", ("classification", "regression"))
        n_out = _check_outputs(self.task, ways, outputs)
        self.ways = ways
        if isinstance(head, str):
            if head != "linear":
                raise ValueError(f"head: expected 'linear' or an nn.Module, got {head!r}")
            feats = feature_size(model, input_shape)
            # metasgd keeps a learning rate per parameter: twice the head's size
            check_nbytes(8 * (feats + 1) * n_out, "ways" if self.task == "classification"
                         else "outputs", f"a linear head of {feats} x {n_out}")
            head = nn.Linear(feats, n_out)
        elif not isinstance(head, nn.Module):
            raise TypeError(f"head: expected 'linear' or an nn.Module, got {type(head).__name__}")
        torch.func.replace_all_batch_norm_modules_(model)
        self.net = _Classifier(model, head)
        # Parameters adapted in the inner loop, in named_parameters order.
        prefix = "head." if self.variant == "anil" else ""
        self._fast_names = [n for n, _ in self.net.named_parameters() if n.startswith(prefix)]
        self.inner_lrs: nn.ParameterList | None = None
        if self.variant == "metasgd":
            params = dict(self.net.named_parameters())
            self.inner_lrs = nn.ParameterList(
                nn.Parameter(torch.full_like(params[n].detach(), self.inner_lr))
                for n in self._fast_names)

    # ------------------------------------------------------------ pieces

    @property
    def backbone(self) -> nn.Module:
        return self.net.body

    @property
    def head(self) -> nn.Module:
        return self.net.head

    def _attack_outputs(self, chunk: Any, ways: int | None,
                        inner_steps: int | None) -> torch.Tensor:
        """Query outputs for :meth:`attack_logits`: ``test_inner_steps`` (or
        ``inner_steps``) inner steps whose graph is kept (second order whatever ``order``),
        so the outputs differentiate through the adaptation to the support images. The
        meta-parameters enter as fresh detached leaves: constants to the caller, whose
        backward never reaches the learner's ``.grad``."""
        sx, sy, qx = self._inputs(chunk, ways)
        steps = self.test_inner_steps if inner_steps is None else inner_steps
        params = {k: v.detach().requires_grad_(True) for k, v in self.net.named_parameters()}
        buffers = dict(self.net.named_buffers())
        lrs = None if self.inner_lrs is None else [a.detach() for a in self.inner_lrs]
        with torch.enable_grad():
            return self._tasks(params, buffers, lrs, sx, sy, qx, steps, False)

    def _use_vmap(self, x: torch.Tensor) -> bool:
        if self.path == "auto":
            # On a CPU, tasks of a small dense network are all per-op overhead, which vmap
            # batches away (experiments/figures.md); convolutions are not.
            return x.device.type == "cuda" or not self._has_conv
        return self.path == "vmap"

    def _default_chunk(self, x: torch.Tensor) -> int | None:
        # The loop path builds one graph per task anyway: a backward per task frees each
        # graph at once (peak memory of one task, as learn2learn's loop) at no extra cost.
        return None if self._use_vmap(x) else 1

    @functools.cached_property
    def _has_conv(self) -> bool:
        return any(isinstance(m, nn.modules.conv._ConvNd) for m in self.net.modules())

    def _task_threads(self, x: torch.Tensor, tasks: int) -> int:
        """Worker threads for the threads path (0: do not use it)."""
        if x.device.type != "cpu" or tasks < 2 or self.path not in ("threads", "auto"):
            return 0
        if self.path == "auto" and self._use_vmap(x):
            return 0
        n = min(torch.get_num_threads(), tasks)
        return n if n > 1 or self.path == "threads" else 0

    def _map_tasks(self, fn: Callable[[int], Any], tasks: int, workers: int) -> list[Any]:
        """``[fn(i) for i in range(tasks)]`` on ``workers`` threads with one torch thread
        each. Each worker takes the next task when it finishes one, so a worker slowed by
        another process on its core does not hold the step up; results stay in task order."""
        nets = [copy.deepcopy(self.net) for _ in range(workers)]
        results: list[Any] = [None] * tasks
        next_task = itertools.count()  # next() on it is atomic under the GIL
        grad_mode, autocast = torch.is_grad_enabled(), _amp.current_autocast()

        def run(w: int) -> None:
            torch.set_num_threads(1)
            _WORKER.nets = {id(self): nets[w]}
            try:  # grad mode and autocast are thread-local
                with torch.set_grad_enabled(grad_mode), _amp.entered(autocast):
                    while (i := next(next_task)) < tasks:
                        results[i] = fn(i)
            finally:
                del _WORKER.nets

        with ThreadPoolExecutor(workers, thread_name_prefix="metarobust-maml") as pool:
            for f in [pool.submit(run, w) for w in range(workers)]:
                f.result()
        return results

    def meta_backward(self, batch: Any, ways: int | None, *,
                      sync: bool = True) -> dict[str, Any]:
        refuse_variable(self, batch)
        check_batch(batch)
        workers = self._task_threads(batch.support_x, batch.support_x.shape[0])
        if not workers:
            return super().meta_backward(batch, ways, sync=sync)
        # the task threads run on the CPU, where reading results costs no synchronisation
        if not torch.is_grad_enabled():
            raise RuntimeError("meta_backward: gradients are disabled (called under "
                               "torch.no_grad()); use evaluate_batch to evaluate")
        ways = self._check_batch(batch, ways)
        b = batch.support_x.shape[0]
        params = [p for p in self.parameters() if p.requires_grad]

        def one(i: int) -> tuple[list[torch.Tensor | None], float, float]:
            task = slice_batch(batch, i, i + 1)
            loss, metric = self._task_losses(self._chunk_outputs(task, ways, meta=True),
                                             task.query_y)
            grads = torch.autograd.grad(loss.sum() / b, params, allow_unused=True)
            return list(grads), float(loss.detach().sum()), float(metric.sum())

        results = self._map_tasks(one, b, workers)
        for k, p in enumerate(params):
            total = None
            for grads, _, _ in results:  # task order: the same sum for any thread count
                g = grads[k]
                if g is not None:
                    total = g.clone() if total is None else total.add_(g)
            if total is None:
                continue
            p.grad = total if p.grad is None else p.grad.add_(total)
        key = "mse" if self.task == "regression" else "accuracy"
        return {"loss": sum(r[1] for r in results) / b, key: sum(r[2] for r in results) / b}

    def query_logits(self, batch: Any, ways: int | None) -> torch.Tensor:
        check_batch(batch)
        workers = self._task_threads(batch.support_x, batch.support_x.shape[0])
        if not workers:
            return super().query_logits(batch, ways)
        ways = self._check_batch(batch, ways)
        outs = self._map_tasks(
            lambda i: self._chunk_outputs(slice_batch(batch, i, i + 1), ways,
                                          meta=False).detach(),
            batch.support_x.shape[0], workers)
        return torch.cat(outs)

    def _predict_one(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                     ways: int | None) -> torch.Tensor:
        if self.task == "classification" and ways != self.ways:
            raise ValueError(f"support_y: this MAML classifier has {self.ways} outputs, and "
                             f"labels 0..{ways - 1 if ways else 0} make {ways}-way tasks")
        return super()._predict_one(sx, sy, qx, ways)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(out, y.to(out.dtype).reshape(out.shape))
        return F.cross_entropy(out, y)

    def _task(self, params: Params, buffers: Params, lrs: Sequence[torch.Tensor] | None,
              sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, steps: int,
              first_order: bool, functional: bool) -> torch.Tensor:
        """Query outputs of one task after ``steps`` inner steps from ``params``.

        ``functional``: inner gradients with ``torch.func.grad`` (inside vmap) rather than
        ``torch.autograd.grad``. ``first_order``: inner gradients are constants.
        """
        net = getattr(_WORKER, "nets", {}).get(id(self), self.net)
        if self.variant == "anil":
            body = {k[5:]: v for k, v in params.items() if k.startswith("body.")}
            body_buf = {k[5:]: v for k, v in buffers.items() if k.startswith("body.")}
            head_buf = {k[5:]: v for k, v in buffers.items() if k.startswith("head.")}
            fs = functional_call(net.body, (body, body_buf), (sx,)).flatten(1)
            fq = functional_call(net.body, (body, body_buf), (qx,)).flatten(1)
            fast = {k: params[k] for k in self._fast_names}

            def forward(p: Params, x: torch.Tensor) -> torch.Tensor:  # x: the features
                return functional_call(net.head, ({k[5:]: v for k, v in p.items()}, head_buf),
                                       (x,))

            inner_x, query_x = fs, fq
        else:
            fast = dict(params)

            def forward(p: Params, x: torch.Tensor) -> torch.Tensor:
                return functional_call(net, (p, buffers), (x,))

            inner_x, query_x = sx, qx

        def inner_loss(p: Params, x: torch.Tensor) -> torch.Tensor:
            return self._loss(forward(p, x), sy)

        names = self._fast_names
        for _ in range(steps):
            grads = self._inner_grads(inner_loss, fast, inner_x, first_order, functional)
            step: Sequence[float | torch.Tensor] = (
                lrs if lrs is not None else [self.inner_lr] * len(names))
            fast = {**fast, **{n: fast[n] - a * g for n, a, g in zip(names, step, grads)}}
        return forward(fast, query_x)

    def _inner_grads(self, inner_loss: Callable[[Params, torch.Tensor], torch.Tensor],
                     fast: Params, x: torch.Tensor, first_order: bool,
                     functional: bool) -> list[torch.Tensor]:
        names = self._fast_names
        if first_order:
            x = x.detach()
        if functional:
            if first_order:
                fast = {k: v.detach() for k, v in fast.items()}
            # Differentiate w.r.t. the adapted parameters only; the others ride along.
            rest = {k: v for k, v in fast.items() if k not in names}
            g = grad(lambda p, x: inner_loss({**rest, **p}, x))(
                {k: fast[k] for k in names}, x)
            return [g[k] for k in names]
        if first_order:
            fast = {k: v.detach() for k, v in fast.items()}
            fast = {k: (v.requires_grad_(True) if k in names else v) for k, v in fast.items()}
            with torch.enable_grad():
                loss = inner_loss(fast, x)
                gs = torch.autograd.grad(loss, [fast[k] for k in names], allow_unused=True)
        else:
            with fused.disabled():  # this graph is differentiated twice
                loss = inner_loss(fast, x)
            gs = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=True,
                                     allow_unused=True)
        return [torch.zeros_like(fast[k]) if g is None else g for k, g in zip(names, gs)]

    def _chunk_outputs(self, chunk: Any, ways: int | None, meta: bool) -> torch.Tensor:
        sx, sy, qx = self._inputs(chunk, ways)
        meta = meta and torch.is_grad_enabled()
        steps = self.inner_steps if meta else self.test_inner_steps
        first_order = self.order == "first" or not meta
        params: Params = dict(self.net.named_parameters())
        buffers: Params = dict(self.net.named_buffers())
        lrs: list[torch.Tensor] | None = (list(self.inner_lrs) if self.inner_lrs is not None
                                          else None)
        if not meta:
            params = {k: v.detach() for k, v in params.items()}
            lrs = [a.detach() for a in lrs] if lrs is not None else None
        with torch.set_grad_enabled(meta):
            return self._tasks(params, buffers, lrs, sx, sy, qx, steps, first_order)

    def _call_outputs(self, chunk: Any, ways: int | None) -> torch.Tensor:
        """The learner's call: adaptation with ``inner_steps`` (training mode) or
        ``test_inner_steps`` (eval mode), the graph to the meta-parameters kept as ``order``
        says while gradients are enabled."""
        sx, sy, qx = self._inputs(chunk, ways)
        steps = self.inner_steps if self.training else self.test_inner_steps
        first_order = self.order == "first" or not torch.is_grad_enabled()
        params: Params = dict(self.net.named_parameters())
        buffers: Params = dict(self.net.named_buffers())
        lrs = list(self.inner_lrs) if self.inner_lrs is not None else None
        return self._tasks(params, buffers, lrs, sx, sy, qx, steps, first_order)

    def _inputs(self, chunk: Any, ways: int | None) -> tuple[torch.Tensor, ...]:
        """A chunk's normalised support images, support labels and query images."""
        if self.task == "classification" and ways != self.ways:
            raise ValueError(f"ways: this MAML classifier has {self.ways} outputs, the batch "
                             f"asks for {ways}-way episodes")
        sx = self.normalize(chunk.support_x.flatten(0, 1)).reshape(chunk.support_x.shape)
        qx = self.normalize(chunk.query_x.flatten(0, 1)).reshape(chunk.query_x.shape)
        return sx, chunk.support_y, qx

    def _tasks(self, params: Params, buffers: Params, lrs: Sequence[torch.Tensor] | None,
               sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, steps: int,
               first_order: bool) -> torch.Tensor:
        """Query outputs ``(c, Q, out)`` of every task of a chunk: vmap or per-task loop."""
        if self._use_vmap(sx):
            def one(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
                return self._task(params, buffers, lrs, sx, sy, qx, steps, first_order,
                                  functional=True)

            with _decomposed_batch_norm(self.net), fused.disabled():
                return vmap(one)(sx, sy, qx)
        return torch.stack([
            self._task(params, buffers, lrs, sx[i], sy[i], qx[i], steps, first_order,
                       functional=False)
            for i in range(sx.shape[0])
        ])
