"""Data-parallel meta-training under ``torchrun``: one process per GPU (or per CPU worker),
on one machine or several, with no change to the config.

::

    torchrun --nproc_per_node=4 -m metarobust train --learner maml --meta-batch 32 ...
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST:29400 -m metarobust train ...      # and node_rank=1 on the other

Semantics. ``meta_batch`` stays the *global* number of tasks per step: rank ``r`` of ``R``
takes the contiguous slice ``r*B/R .. (r+1)*B/R`` of every global meta-batch (episodes
``step*B .. (step+1)*B`` of the counter-based sampler), so ``B`` must be a multiple of ``R``
(a ``ValueError`` says so otherwise; ProtoNet's default ``meta_batch`` of 1 therefore needs
``--meta-batch R`` or more). Learners average the loss over their local tasks; every rank
holds the same number, so averaging the gradients over ranks gives the gradient of the
mean loss over the global meta-batch, as in one process. The model, the optimiser, the step
and the learning-rate schedule stay identical on every rank, and a run may be resumed with
another number of processes. Up to float rounding only: a learner's rounding depends on
how many tasks share a forward pass (as when ``chunk_size`` changes in one process), so the
parameters equal those of one process with ``chunk_size = B/R`` (bit for bit with 2 gloo
ranks in the tests), and differ from other chunkings by rounding that Adam may amplify to
about ``lr`` per step on gradients that are exactly 0 (conv biases before BatchNorm).

Synchronisation, per training step (see :meth:`Distributed.meta_backward`):

- gradients: one ``all_reduce`` (sum) of a flattened bucket per dtype, divided by ``R``,
  explicit after ``meta_backward`` (which back-propagates chunk by chunk, and MAML runs
  ``functional_call`` over the module's parameters, so this is simpler and exactly as
  precise as DDP's hooks). A parameter without a gradient on every rank keeps ``None``.
- BatchNorm running statistics (ProtoNet's backbone): combined *exactly* (up to float
  rounding). Each rank updates them task by task over its slice; since an exponential
  moving average is linear in the batch statistics, the single-process result over the
  global batch in order (rank 0's tasks first) is
  ``(1-m)^K r0 + sum_q (1-m)^(tasks after rank q) (r_q - (1-m)^(k_q) r0)``, rebuilt with
  one ``all_reduce``; cumulative averages (``momentum=None``) likewise, and
  ``num_batches_tracked`` counts every task. So running statistics, and hence evaluation,
  match a single process to float tolerance, not only the parameters. (MAML keeps no
  running statistics.) Other buffers are never changed by training.
- metrics: the step's loss and accuracy (or MSE) are ``all_reduce``-averaged, so
  ``metrics.jsonl`` and the progress bar show the global means.

Rank 0 alone validates and writes ``metrics.jsonl``, ``config.toml`` and the checkpoints;
on resume it reads ``last.pt`` and broadcasts it, so every rank starts from the same state
(no shared file system is needed). The other ranks wait for rank 0's validation in the
next step's collective, so the timeout must exceed one validation.

Failures. Every collective has a timeout (``METAROBUST_DIST_TIMEOUT`` seconds, default 600):
when a rank dies or stalls, the others stop with a :class:`DistributedError` naming the
cause rather than hanging, and torchrun ends the job with a non-zero status (torchrun also
stops the remaining ranks as soon as one exits with an error). On CUDA,
``TORCH_NCCL_ASYNC_ERROR_HANDLING=1`` is set (unless already set) so a timed-out NCCL
collective aborts its process too.

Teardown. :func:`teardown` (the command line calls it however the run ends; an atexit hook
calls it for a group :class:`Distributed` joined and no one destroyed) destroys the
process group: that waits for its collectives and joins its threads while the interpreter
is whole. A group still alive when the interpreter finalizes can abort a process that has
succeeded: a gloo thread dropping a finished collective's tensor takes the GIL, is ended
by the finalizing interpreter inside a C++ destructor, and the process dies with
"terminate called without an active exception" (SIGABRT), so torchrun fails the job.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from .models.batchnorm import running_stats

if TYPE_CHECKING:
    from .learners import Learner

__all__ = ["DEFAULT_TIMEOUT", "Distributed", "DistributedError", "average_gradients",
           "env_local_rank", "env_rank", "env_world_size", "is_main", "local_batch", "rank",
           "teardown", "timeout_from_env", "world_size"]

DEFAULT_TIMEOUT = 600.0     # seconds
TIMEOUT_ENV = "METAROBUST_DIST_TIMEOUT"


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank died or stalled."""


# ---------------------------------------------------------------- environment and rank

def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer in the environment, got {value!r}") \
            from None


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 without it)."""
    return _env_int("WORLD_SIZE", 1)


def env_rank() -> int:
    """``RANK`` set by torchrun (0 without it)."""
    return _env_int("RANK", 0)


def env_local_rank() -> int:
    """``LOCAL_RANK`` (the process's index on its machine) set by torchrun (0 without it)."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """Processes in the job: the process group's size, else ``WORLD_SIZE``, else 1."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() \
        else env_world_size()


def rank() -> int:
    """This process's rank: the process group's, else ``RANK``, else 0."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else env_rank()


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return rank() == 0


def local_batch(meta_batch: int, world: int, name: str = "meta_batch") -> int:
    """Tasks (or, for ``name`` batch_size, pre-training images) per rank of a global
    ``meta_batch`` split over ``world`` ranks."""
    if world < 1:
        raise ValueError(f"world size: must be >= 1, got {world}")
    if meta_batch % world:
        hint = (" (ProtoNet's default meta_batch is 1; pass --meta-batch)"
                if meta_batch < world and name == "meta_batch" else "")
        what = "tasks" if name == "meta_batch" else "images"
        raise ValueError(
            f"{name}: {meta_batch} {what} per step cannot be split evenly over world size "
            f"{world} (torchrun processes); use a multiple of {world}, e.g. "
            f"{world * max(1, round(meta_batch / world))}{hint}")
    return meta_batch // world


def timeout_from_env() -> float:
    """Collective timeout in seconds: ``METAROBUST_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT`."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}: expected seconds > 0, got {value!r}")
    return seconds


def teardown() -> None:
    """Destroys the default process group if there is one (a no-op otherwise): it waits
    for the group's collectives and joins its communication threads, so none is left to
    run while the interpreter finalizes (see :func:`_import_group_defaults`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_exit_teardown_registered = False


def _register_exit_teardown() -> None:
    """Registers :func:`teardown` to run at exit (once per process): atexit hooks run
    before the interpreter finalizes."""
    global _exit_teardown_registered
    if not _exit_teardown_registered:
        atexit.register(teardown)
        _exit_teardown_registered = True


def _import_group_defaults() -> None:
    """Imports, before the default process group exists, the torch module that binds it at
    import time: ``torch.distributed.nn.functional`` defaults ``group=group.WORLD``, and
    torch._dynamo, which the optimisers import, loads it. Loaded after the group exists,
    its defaults keep the group alive past ``destroy_process_group``: the group's threads
    (gloo's) then outlive teardown, and one dropping the last reference to a collective's
    tensor while the interpreter finalizes is cut off taking the GIL inside a C++
    destructor, which aborts the process ("terminate called without an active exception")
    after a successful run. Loaded first, the defaults hold ``None``."""
    if dist.is_available():
        import torch.distributed.nn.functional  # noqa: F401


# ---------------------------------------------------------------- flat collectives

def _flat_groups(tensors: Iterable[torch.Tensor]) -> dict[tuple[Any, Any], list[torch.Tensor]]:
    groups: dict[tuple[Any, Any], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return groups


def _scatter(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def _broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrites ``tensors`` with rank ``src``'s values (one broadcast per dtype)."""
    for group in _flat_groups(tensors).values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src)
        with torch.no_grad():
            _scatter(flat, group)


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replaces each ``.grad`` by its mean over the ranks: one flattened ``all_reduce`` per
    dtype. A parameter whose gradient is ``None`` on every rank keeps ``None``; one that has
    a gradient on some ranks only gets the mean with zeros for the others."""
    world = dist.get_world_size()
    params = [p for p in parameters if p.requires_grad]
    for (dtype, device), group in _flat_groups(params).items():
        have = torch.tensor([p.grad is not None for p in group], dtype=dtype, device=device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in group] + [have])
        dist.all_reduce(flat)
        n = flat.numel() - len(group)
        flat[:n].div_(world)
        offset = 0
        for p, present in zip(group, (flat[n:] > 0).tolist()):
            size = p.numel()
            if present:
                g = flat[offset:offset + size].view_as(p)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            offset += size


def _tracked_batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None and m.num_batches_tracked is not None]


def _cumulative_average(s: torch.Tensor, old: torch.Tensor, n0: int, total: int
                        ) -> torch.Tensor:
    """A cumulative running average (momentum None) after ``total`` more updates, from the
    ranks' summed contributions ``s``."""
    return (s + old * n0) / max(n0 + total, 1)


def _decayed_average(s: torch.Tensor, old: torch.Tensor, total: int, keep: float
                     ) -> torch.Tensor:
    """An exponential running average after ``total`` more updates (``keep``: 1 -
    momentum), from the ranks' summed contributions ``s``."""
    return s + old * keep ** total


def _running(m: nn.modules.batchnorm._BatchNorm
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The running mean, variance and update count of a tracked BatchNorm."""
    stats = running_stats(m)
    if stats is None:
        raise ValueError(f"{m}: tracks no running statistics")
    return stats


# ---------------------------------------------------------------- the trainer's helper

class Distributed:
    """The process group of a torchrun job and the per-step synchronisation of the trainer.

    Use :meth:`from_env`: it returns ``None`` in a single process, so single-process
    training runs exactly the code it always did.
    """

    def __init__(self, device: torch.device, timeout: float | None = None) -> None:
        self.timeout = timeout_from_env() if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        if device.type == "cuda":
            device = torch.device("cuda", env_local_rank())
            torch.cuda.set_device(device)
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        elif device.type != "cpu":
            raise ValueError(f"device: distributed training runs on cpu or cuda, got {device}")
        self.device = device
        self.owns_group = not dist.is_initialized()
        if self.owns_group:
            _import_group_defaults()
            kwargs: dict[str, Any] = {}
            if device.type == "cuda":
                kwargs["device_id"] = device
            try:
                dist.init_process_group(
                    backend="nccl" if device.type == "cuda" else "gloo",
                    init_method="env://", timeout=datetime.timedelta(seconds=self.timeout),
                    **kwargs)
            except Exception as e:
                raise DistributedError(
                    f"distributed: rank {env_rank()} of {env_world_size()} could not join the "
                    f"process group within {self.timeout:g}s ({type(e).__name__}: {e})") from e
            # destroyed before the interpreter finalizes even if no one calls teardown
            _register_exit_teardown()
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.is_main = self.rank == 0
        self._bn_before: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    @classmethod
    def from_env(cls, device: torch.device, meta_batch: int | None,
                 timeout: float | None = None, *,
                 batch_size: int | None = None) -> Distributed | None:
        """The job's :class:`Distributed` when torchrun started several processes (checking
        first that ``meta_batch`` (episodic steps; None: none) and ``batch_size``
        (pre-training steps; None: none) split evenly, before anything waits on other
        ranks); ``None`` in a single process."""
        world = world_size()
        if world <= 1:
            return None
        if meta_batch is not None:
            local_batch(meta_batch, world)
        if batch_size is not None:
            local_batch(batch_size, world, "batch_size")
        return cls(device, timeout)

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except DistributedError:
            raise
        except Exception as e:
            raise DistributedError(
                f"distributed: {what} failed on rank {self.rank} of {self.world} (timeout "
                f"{self.timeout:g}s, {TIMEOUT_ENV}): another rank probably failed or stalled; "
                f"its log says why ({type(e).__name__}: {e})") from e

    # -- batches

    def local_batch(self, meta_batch: int) -> int:
        return local_batch(meta_batch, self.world)

    def first_episode(self, step: int, meta_batch: int) -> int:
        """Index of this rank's first episode of global step ``step``."""
        return step * meta_batch + self.rank * self.local_batch(meta_batch)

    # -- state

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers onto every rank."""
        with self._collective("broadcasting the model"):
            _broadcast_(list(module.parameters()) + list(module.buffers()))

    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0 and its result (or its exception) broadcast to all."""
        box: list[Any] = [None]
        if self.is_main:
            try:
                box = [("ok", fn())]
            except Exception as e:  # re-raised on every rank
                box = [("error", type(e), str(e))]
        with self._collective("broadcasting from rank 0"):
            dist.broadcast_object_list(box, src=0)
        if box[0][0] == "error":
            kind = box[0][1]
            kind = kind if kind in (ValueError, TypeError, FileNotFoundError) else RuntimeError
            raise kind(box[0][2])
        return box[0][1]

    def agree(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (e.g. step times, so time budgets end at the
        same step everywhere)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        with self._collective("broadcasting a value"):
            dist.broadcast(t, 0)
        return float(t.item())

    def barrier(self) -> None:
        with self._collective("barrier"):
            dist.barrier()

    # -- the training step

    def meta_backward(self, learner: Learner, batch: Any, ways: int | None
                      ) -> dict[str, float]:
        """``learner.meta_backward`` on this rank's tasks, then gradients, BatchNorm running
        statistics and metrics synchronised over the ranks (see the module docstring)."""
        return self.synchronised_backward(learner, lambda: learner.meta_backward(batch, ways))

    def synchronised_backward(self, learner: nn.Module, backward: Callable[[], dict[str, Any]],
                              extra: Iterable[nn.Parameter] = ()) -> dict[str, float]:
        """``backward()`` (this rank's share of a step: it back-propagates and returns its
        metrics), then the gradients of ``learner`` and ``extra`` (e.g. a pre-training
        head), BatchNorm running statistics and metrics synchronised over the ranks."""
        bns = _tracked_batch_norms(learner)
        before = [(mean.clone(), var.clone(), int(count))
                  for mean, var, count in map(_running, bns)]
        stats = backward()
        keys = list(stats)
        # metrics, then each rank's BatchNorm update count per layer in its own slots
        mine = [int(_running(m)[2]) - n0 for m, (_, _, n0) in zip(bns, before)]
        slots = [0.0] * (self.world * len(bns))
        slots[self.rank * len(bns):(self.rank + 1) * len(bns)] = mine
        vec = torch.tensor([float(stats[k]) for k in keys] + slots, dtype=torch.float64,
                           device=self.device)
        with self._collective("averaging metrics"):
            dist.all_reduce(vec)
        values = vec.tolist()
        out = {k: values[i] / self.world for i, k in enumerate(keys)}
        counts = [[int(values[len(keys) + q * len(bns) + i]) for q in range(self.world)]
                  for i in range(len(bns))]
        with self._collective("averaging gradients"):
            average_gradients([*learner.parameters(), *extra])
        if bns:
            with self._collective("merging BatchNorm statistics"):
                self._merge_batch_norms(bns, before, counts)
        return out

    def _merge_batch_norms(self, bns: list[nn.modules.batchnorm._BatchNorm],
                           before: list[tuple[torch.Tensor, torch.Tensor, int]],
                           counts: list[list[int]]) -> None:
        """Running statistics as one process would have them after the global batch's
        updates in rank order (exact up to rounding; see the module docstring)."""
        parts: list[torch.Tensor] = []
        finish: list[tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]] = []
        for m, (mean0, var0, n0), ks in zip(bns, before, counts):
            k, total = ks[self.rank], sum(ks)
            mean, var, count = _running(m)
            if m.momentum is None:   # cumulative average over n0 + total updates
                for cur, old in ((mean, mean0), (var, var0)):
                    parts.append(cur.detach() * (n0 + k) - old * n0)
                    finish.append((cur, functools.partial(_cumulative_average, old=old,
                                                          n0=n0, total=total)))
            else:
                keep = 1.0 - float(m.momentum)
                later = sum(ks[self.rank + 1:])
                for cur, old in ((mean, mean0), (var, var0)):
                    parts.append((cur.detach() - old * keep ** k) * keep ** later)
                    finish.append((cur, functools.partial(_decayed_average, old=old,
                                                          total=total, keep=keep)))
            count.fill_(n0 + total)
        for group in _flat_groups(parts).values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            _scatter(flat, group)
        with torch.no_grad():
            for summed, (cur, fn) in zip(parts, finish):
                cur.copy_(fn(summed))
