"""Side-by-side benchmarks of the Rust hot paths against NumPy / torch references.

Everything is measured in one process, interleaved: each of ``repeats`` rounds times every
candidate once (a block of calls lasting about ``min_time`` seconds, candidates in a rotating
order, garbage collection off as in ``timeit``). A candidate's time is the best round (the
least disturbed by other load); the median round is reported beside it. Ratios compare
best rounds.

Sampler (:func:`bench_sampler`): episodes/s of

- ``rust``: :class:`metarobust.EpisodeSampler` ``.sample_batch`` (fresh output tensors);
- ``numpy``: :class:`NumpyEpisodeSampler`, a vectorised NumPy sampler (Generator draws for a
  whole batch, ``np.take`` gathers, ``astype(float32)`` then ``/= 255`` for float output);
- ``dataloader``: a per-item ``Dataset`` + episode batch sampler + ``DataLoader``
  (``num_workers=0``, collated with ``torch.stack``), as learn2learn / easyfsl do;
- ``memcpy``: ``np.copyto`` of a preallocated source holding the same bytes into freshly
  ``np.empty``-allocated outputs: the bandwidth ceiling with the sampler's allocation pattern.

Kernels (:func:`bench_kernels`): mean prototypes + squared Euclidean distances for
``(B, N, K, Q, D)`` = (tasks, ways, shots, queries per task, embedding dim), float32:

- ``rust``: :func:`metarobust.ops.prototype_distances` (fused, one Rust call each way);
- ``torch_expand``: ``p = s.view(B, N, K, D).mean(2)``, then
  ``((q[:, :, None] - p[:, None]) ** 2).sum(-1)``;
- ``torch_gemm``: same prototypes; ``|q|^2 + |p|^2 - 2 q p^T`` (one batched matmul);
- ``torch_cdist``: same prototypes; ``torch.cdist(q, p) ** 2``;
- each torch expression again as ``<name>/1t`` with ``torch.set_num_threads(1)`` (when torch
  has more threads): on a small or shared machine OpenMP threads can cost torch more than
  they gain, and the best torch candidate, whichever it is, is the reference.

``fwd`` runs on inputs without ``requires_grad`` (inference); ``fwd+bwd`` has
``requires_grad=True`` support and query embeddings and calls ``dist.backward(w)`` with a
fixed random weight ``w`` (the gradient of ``(w * dist).sum()``), clearing ``.grad`` first.
FLOP counts (multiply and add counted separately): forward ``2*B*Q*N*D`` (the distance
GEMM) ``+ B*N*K*D`` (prototype sums); forward+backward ``3 * 2*B*Q*N*D + 2 * B*N*K*D``
(backward: the two GEMMs ``g @ p`` and ``g^T @ q``, and spreading the prototype gradient
back to the support items). Element-wise terms (norms, clamps) are not counted.

MAML meta-training (:func:`bench_maml`): tasks/s of one meta-training step (``zero_grad``
then the meta-gradient of a whole meta-batch; no optimiser step) with Finn et al.'s
Omniglot setting: ``conv4_finn`` at 28x28, 5-way 1-shot 15-query, one inner step with
``inner_lr`` 0.4, meta-batch ``tasks`` (32), second and first order:

- ``loop`` / ``threads`` / ``vmap``: :class:`metarobust.learners.MAML` with that ``path``
  (``meta_backward``); ``auto`` is whichever it picks on the device for the Conv-4 (threads
  on a CPU with several torch threads, else the loop; vmap on CUDA), shown as ``(auto)``;
- ``reference``: :class:`ReferenceMAML`, MAML as learn2learn runs it: per task, clone the
  module (the mechanics of learn2learn's ``clone_module``: the module objects copied, every
  parameter replaced by ``p.clone()``), adapt with ``torch.autograd.grad``
  (``create_graph=True`` for second order; first order: no graph, the gradients are
  constants) and learn2learn's ``update_module`` (each parameter replaced by ``p - lr g``),
  query loss through the adapted module and ``(loss / tasks).backward()`` per task. Its
  BatchNorm layers keep no running statistics (``track_running_stats=False``, as
  learn2learn's Omniglot CNN) and normalise every forward with its own batch statistics;
- ``plain``: the same loop without the module cloning: cloned parameters applied with
  ``torch.func.functional_call`` (a lean plain autograd loop, shown beside the reference);
- ``unfused``: metarobust's auto path with ``fuse_first_block=False``: the Conv-4's first
  block through torch rather than the fused Rust kernels of :mod:`metarobust.models.fused`
  (CPU only; what the fusion gains, side by side).

Every candidate starts from the same initial weights and the same batch, and before any
timing :func:`check_maml_agree` verifies that each one's meta-gradient equals the
reference's (``allclose``) on the first 2 tasks of that batch, in float64 (in float32 the
vmap path differs by about 1%, see there; the fused first block runs in float32 only, and
the test suite checks it against float64 references). A step's time is the best of
``repeats`` interleaved rounds of one step each (after one warm-up step), median beside.
Peak memory is measured apart, one fresh subprocess per candidate (:func:`maml_peak_memory`):
one warm-up step, then ``gc.collect()`` + ``malloc_trim``, the resident-set peak reset
(``/proc/self/clear_refs``), one step, and the reported figure is ``VmHWM`` (peak resident
set) minus ``VmRSS`` just before the step: the extra memory the step itself touches. (torch's
CPU allocations are invisible to ``tracemalloc``.) On CUDA it is
``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()`` before the step.

Corruptions (:func:`bench_corruptions`): the Rust sampler with ``corruption=name`` (applied
to the queries, severity 3, in the same parallel pass) against the same sampler without,
5-way 1-shot 15-query, batch 64, Omniglot 28x28: the ratio ``corrupted / clean`` of the best
rounds' times per batch (target: at most 2). The corruptions with a finite set of results
per image are timed in the steady state of a long run (the sampler's cache built, in the
warm-up) and again with the cache off, every item computed.

Diagnostics (:func:`sampler_memory`, :func:`sampler_alloc_probe`,
:func:`kernel_overhead_probe`) show resident memory around sampling, the cost of fresh
output buffers (page faults) and the Python/autograd share of the fused op.

>>> rows = bench_kernels(shapes=[(2, 5, 1, 10, 8)], repeats=1, min_time=0.001)  # doctest: +SKIP
>>> print_table(rows)  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from . import _core, ops
from .episodes import CORRUPTIONS, Episode, EpisodeSampler

__all__ = [
    "DEFAULT_BATCH", "DEFAULT_SAMPLER_SETTINGS", "DEFAULT_KERNEL_SHAPES", "DTYPES",
    "DEFAULT_MAML_TASKS", "KERNEL_CANDIDATES", "MAML_CANDIDATES", "MAML_ORDERS", "MODES",
    "SAMPLER_CANDIDATES", "TARGETS",
    "NumpyEpisodeSampler", "ReferenceMAML", "add_bench_parser", "bench_kernels",
    "CORRUPTION_SETTING", "CORRUPTION_SEVERITY", "bench_corruptions", "bench_maml",
    "bench_sampler", "check_maml_agree",
    "corruption_candidates", "corruption_summary", "maml_batch", "maml_candidates",
    "MAML_SETTING", "maml_auto_path", "maml_peak_memory", "maml_summary", "measure_steps",
    "default_kernel_candidates", "kernel_inputs",
    "check_targets", "kernel_candidates", "kernel_flops", "kernel_overhead_probe",
    "kernel_summary", "machine_info", "measure", "omniglot_like", "print_table", "run",
    "run_cli", "sampler_alloc_probe", "sampler_candidates", "sampler_memory",
    "sampler_summary",
]

DEFAULT_SAMPLER_SETTINGS: tuple[tuple[int, int, int], ...] = ((5, 1, 15), (20, 5, 15))
DEFAULT_BATCH = 64
DTYPES = ("float32", "uint8")
DEFAULT_KERNEL_SHAPES: tuple[tuple[int, int, int, int, int], ...] = (
    (32, 5, 5, 75, 64),
    (4, 20, 5, 300, 1600),
    (1, 64, 5, 320, 640),
)
MODES = ("fwd", "fwd+bwd")
SAMPLER_CANDIDATES = ("rust", "numpy", "dataloader", "memcpy")
KERNEL_CANDIDATES = ("rust", "torch_expand", "torch_gemm", "torch_cdist")

# Targets on a 2-core machine (see benches/compare.py).
TARGETS = {
    "sampler_vs_numpy": 3.0,          # every setting, same output dtype
    "sampler_vs_dataloader": 50.0,    # 5w1s15q, batch 64
    "sampler_pct_memcpy": 40.0,       # 5w1s15q, batch 64
    "kernel_small": 3.0,              # (32, 5, 5, 75, 64), fwd and fwd+bwd
    "kernel_large": 1.0,              # the other shapes
    "maml_vs_reference": 1.3,         # second order, path auto vs learn2learn-style, CPU
    "corrupted_vs_clean": 2.0,        # at most: corrupted / clean sampling time, 5w1s15q
}
CORRUPTION_SETTING = (5, 1, 15)
CORRUPTION_SEVERITY = 3
SMALL_KERNEL_SHAPE = (32, 5, 5, 75, 64)


# ---------------------------------------------------------------- timing

def measure(
    candidates: dict[str, Callable[[], Any]], repeats: int = 7, min_time: float = 0.1,
    faults: dict[str, float] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one value per round, rounds interleaved.

    Each candidate is warmed up and calibrated to a block of calls lasting about
    ``min_time``; then ``repeats`` rounds time one block of every candidate, in an order that
    rotates from round to round. ``faults``, when given, receives each candidate's minor
    page faults per call (``getrusage`` ``ru_minflt``, whole process) over the timed blocks.
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    number: dict[str, int] = {}
    for name, fn in candidates.items():
        fn()
        calls, elapsed = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter() - t0
            if elapsed >= min(0.02, min_time) or calls >= 1 << 20:
                break
            calls *= 2
        number[name] = max(1, math.ceil(min_time / (elapsed / calls)))
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in names}
    flt = dict.fromkeys(names, 0)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn, n = candidates[name], number[name]
            enabled = gc.isenabled()
            gc.disable()
            try:
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - t0) / n)
                flt[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            finally:
                if enabled:
                    gc.enable()
    if faults is not None:
        faults.update({k: flt[k] / (number[k] * repeats) for k in names})
    return times


def _stats(samples: Sequence[float]) -> tuple[float, float]:
    return min(samples), statistics.median(samples)


# ---------------------------------------------------------------- data

def omniglot_like(data_root: str | None = None, image_size: int = 28,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images, labels, source)``: Omniglot background, 964 classes x 20, uint8 (N, 1, S, S).

    From ``<data_root or $METAROBUST_DATA>/omniglot-npz/images_background.npz`` when it
    exists (dark ink on white as in the source; resized 105 -> ``image_size`` with PIL
    ``Image.BOX`` area averaging); otherwise synthetic random pixels of the same shape.
    """
    root = data_root if data_root is not None else os.environ.get("METAROBUST_DATA")
    path = os.path.join(root, "omniglot-npz", "images_background.npz") if root else None
    if path and os.path.exists(path):
        from PIL import Image

        with np.load(path) as z:
            white = z["images"]  # bool (classes, 20, 105, 105), True = background
        classes, per_class = white.shape[:2]
        flat = white.reshape(-1, *white.shape[2:])
        images = np.empty((flat.shape[0], 1, image_size, image_size), np.uint8)
        for i, im in enumerate(flat):
            # Not view(uint8) * 255: the file stores True as 0xFF, and 0xFF * 255 wraps to 1.
            pil = Image.fromarray(np.where(im, np.uint8(255), np.uint8(0)), mode="L")
            images[i, 0] = np.asarray(pil.resize((image_size, image_size), Image.BOX))
        labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
        return images, labels, f"Omniglot background ({path}), dark ink on white, BOX-resized"
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (964 * 20, 1, image_size, image_size), dtype=np.uint8)
    labels = np.repeat(np.arange(964, dtype=np.int64), 20)
    return images, labels, "synthetic uint8 (964 classes x 20, METAROBUST_DATA not set)"


# ---------------------------------------------------------------- sampler candidates

class NumpyEpisodeSampler:
    """A straightforward vectorised NumPy episode sampler (the reference for ``rust``).

    Per batch: distinct classes by one ``integers`` draw (rows with a repeat redrawn with
    ``choice(replace=False)``), items by ``argsort`` of uniform draws within each class,
    then one ``np.take`` gather each for support and query items; float32 output is
    ``astype(float32)`` then ``/= 255`` in place. Needs the same number of items in every
    class.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, ways: int, shots: int,
                 queries: int, seed: int = 0, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        order = np.argsort(labels, kind="stable")
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() != counts.max():
            raise ValueError("labels: NumpyEpisodeSampler needs equal class sizes")
        self.images, self.dtype = images, dtype
        self.table = order.reshape(len(counts), counts[0])  # (classes, per_class) item ids
        self.ways, self.shots, self.queries = ways, shots, queries
        self.rng = np.random.default_rng(seed)
        self._sy = np.repeat(np.arange(ways, dtype=np.int64), shots)
        self._qy = np.repeat(np.arange(ways, dtype=np.int64), queries)

    def draw(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class ids ``(count, ways)`` and item ids ``(count, ways, shots)`` and
        ``(count, ways, queries)``."""
        n_classes, per_class = self.table.shape
        w, s, q = self.ways, self.shots, self.queries
        # Uniform distinct classes: draw with replacement, redraw the rare rows with repeats.
        cls = self.rng.integers(0, n_classes, (count, w))
        ordered = np.sort(cls, axis=1)
        for row in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):
            cls[row] = self.rng.choice(n_classes, w, replace=False)
        pick = np.argsort(self.rng.random((count, w, per_class)), axis=2)[:, :, : s + q]
        items = self.table[cls[:, :, None], pick]
        return cls, items[:, :, :s], items[:, :, s:]

    def sample_batch(self, count: int) -> Episode:
        cls, sup, qry = self.draw(count)
        xs = []
        for idx in (sup, qry):
            x = np.take(self.images, idx.reshape(count, -1), axis=0)
            if self.dtype == "float32":
                x = x.astype(np.float32)
                x /= 255
            xs.append(torch.from_numpy(x))
        return Episode(
            support_x=xs[0],
            support_y=torch.from_numpy(np.tile(self._sy, (count, 1))),
            query_x=xs[1],
            query_y=torch.from_numpy(np.tile(self._qy, (count, 1))),
            classes=torch.from_numpy(np.ascontiguousarray(cls)),
        )


class _ItemDataset(torch.utils.data.Dataset):
    """One image per item, converted to a float tensor in [0, 1] (or kept uint8)."""

    def __init__(self, images: np.ndarray, to_float: bool) -> None:
        self.images, self.to_float = images, to_float

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = torch.from_numpy(self.images[index])
        return x.float().div_(255) if self.to_float else x


class _EpisodeBatchSampler(torch.utils.data.Sampler):
    """Yields, per batch of ``count`` episodes, one flat index list: every support item of
    every episode (episode, way, shot order), then every query item, so the stacked tensor
    splits into support and query by views."""

    def __init__(self, numpy_sampler: NumpyEpisodeSampler, count: int, batches: int) -> None:
        self.ns, self.count, self.batches = numpy_sampler, count, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for _ in range(self.batches):
            _, sup, qry = self.ns.draw(self.count)
            yield sup.reshape(-1).tolist() + qry.reshape(-1).tolist()


def _collate(count: int, ways: int, shots: int, queries: int):
    sy = torch.arange(ways).repeat_interleave(shots).repeat(count, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(count, 1)
    cl = torch.zeros(count, ways, dtype=torch.int64)  # item lists carry no episode classes

    def collate(items: list[torch.Tensor]) -> Episode:
        x = torch.stack(items)
        n_sup = count * ways * shots
        return Episode(
            support_x=x[:n_sup].view(count, ways * shots, *x.shape[1:]),
            support_y=sy,
            query_x=x[n_sup:].view(count, ways * queries, *x.shape[1:]),
            query_y=qy,
            classes=cl,
        )

    return collate


def _dataloader_sampler(images, labels, ways, shots, queries, batch, dtype, seed):
    ns = NumpyEpisodeSampler(images, labels, ways, shots, queries, seed, "uint8")
    loader = torch.utils.data.DataLoader(
        _ItemDataset(images, dtype == "float32"),
        batch_sampler=_EpisodeBatchSampler(ns, batch, 1 << 40),
        collate_fn=_collate(batch, ways, shots, queries),
        num_workers=0,
    )
    it = iter(loader)
    return lambda: next(it)


_EPISODE_FIELDS = ("support_x", "support_y", "query_x", "query_y", "classes")


def _memcpy(sampler: EpisodeSampler, batch: int) -> Callable[[], tuple[np.ndarray, ...]]:
    ref = sampler.sample_batch(0, batch)
    sources = [getattr(ref, f).numpy().copy() for f in _EPISODE_FIELDS]

    def copy() -> tuple[np.ndarray, ...]:
        outs = []
        for src in sources:
            out = np.empty(src.shape, src.dtype)
            np.copyto(out, src)
            outs.append(out)
        return tuple(outs)

    return copy


def _rust_batches(sampler: EpisodeSampler, batch: int,
                  alloc: str = "sample_batch") -> Callable[[], Any]:
    """Consecutive batches from ``sampler``. alloc: ``sample_batch`` (the public method:
    fresh ``torch.empty`` outputs), ``np.empty`` (fresh NumPy outputs filled by the same Rust
    call, wrapped with ``torch.from_numpy``) or ``reused`` (one set of outputs, refilled)."""
    ref = sampler.sample_batch(0, batch)
    specs = [(t.shape, t.numpy().dtype) for t in (getattr(ref, f) for f in _EPISODE_FIELDS)]
    reused = [np.empty(shape, dt) for shape, dt in specs]
    position = [0]

    def call() -> Any:
        start = position[0]
        position[0] += batch
        if alloc == "sample_batch":
            return sampler.sample_batch(start, batch)
        outs = reused if alloc == "reused" else [np.empty(shape, dt) for shape, dt in specs]
        sampler._core.fill(start, batch, *outs)
        return Episode(*(torch.from_numpy(o) for o in outs))

    if alloc not in ("sample_batch", "np.empty", "reused"):
        raise ValueError(f"alloc: expected sample_batch, np.empty or reused, got {alloc!r}")
    return call


def sampler_candidates(images: np.ndarray, labels: np.ndarray, ways: int, shots: int,
                       queries: int, batch: int, dtype: str, seed: int = 0,
                       names: Iterable[str] = SAMPLER_CANDIDATES) -> dict[str, Callable]:
    """Zero-argument callables, each producing one batch of ``batch`` episodes."""
    rust = EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries,
                          seed=seed, dtype=dtype)
    out: dict[str, Callable] = {}
    for name in names:
        if name == "rust":
            out[name] = _rust_batches(rust, batch)
        elif name == "numpy":
            ns = NumpyEpisodeSampler(images, labels, ways, shots, queries, seed, dtype)
            out[name] = lambda ns=ns: ns.sample_batch(batch)
        elif name == "dataloader":
            out[name] = _dataloader_sampler(images, labels, ways, shots, queries, batch,
                                            dtype, seed)
        elif name == "memcpy":
            out[name] = _memcpy(rust, batch)
        else:
            raise ValueError(f"sampler candidate: expected one of {SAMPLER_CANDIDATES}, "
                             f"got {name!r}")
    return out


def _batch_bytes(ways: int, shots: int, queries: int, batch: int, image_size: int,
                 dtype: str) -> int:
    px = 4 if dtype == "float32" else 1
    return batch * (ways * (shots + queries) * (image_size * px + 8) + ways * 8)


def _setting(ways: int, shots: int, queries: int) -> str:
    return f"{ways}w{shots}s{queries}q"


def bench_sampler(
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    settings: Sequence[tuple[int, int, int]] = DEFAULT_SAMPLER_SETTINGS,
    batch: int = DEFAULT_BATCH,
    dtypes: Sequence[str] = DTYPES,
    repeats: int = 7,
    min_time: float = 0.1,
    names: Sequence[str] = SAMPLER_CANDIDATES,
) -> list[dict]:
    """One row per (setting, dtype, candidate): episodes/s, GB/s of output, ratios."""
    if images is None or labels is None:
        images, labels, _ = omniglot_like()
    item = int(np.prod(images.shape[1:]))
    rows = []
    for ways, shots, queries in settings:
        for dtype in dtypes:
            cands = sampler_candidates(images, labels, ways, shots, queries, batch, dtype,
                                       names=names)
            faults: dict[str, float] = {}
            times = measure(cands, repeats, min_time, faults)
            nbytes = _batch_bytes(ways, shots, queries, batch, item, dtype)
            best = {n: _stats(t)[0] for n, t in times.items()}
            for name, samples in times.items():
                t_best, t_med = _stats(samples)
                rows.append({
                    "setting": _setting(ways, shots, queries), "batch": batch, "dtype": dtype,
                    "candidate": name, "ms/batch": t_best * 1e3, "median ms": t_med * 1e3,
                    "episodes/s": batch / t_best, "GB/s": nbytes / t_best / 1e9,
                    "faults/batch": faults[name],
                    "rust speedup": best["rust"] / t_best if "rust" in best else float("nan"),
                })
            gc.collect()
    return rows


def sampler_summary(rows: list[dict]) -> list[dict]:
    """Per (setting, dtype): Rust/NumPy, Rust/DataLoader and Rust as % of the memcpy rate."""
    out = []
    keys = list(dict.fromkeys((r["setting"], r["dtype"]) for r in rows))
    for setting, dtype in keys:
        eps = {r["candidate"]: r["episodes/s"] for r in rows
               if r["setting"] == setting and r["dtype"] == dtype}
        rust = eps.get("rust", float("nan"))
        out.append({
            "setting": setting, "dtype": dtype, "rust ep/s": rust,
            "rust/numpy": rust / eps.get("numpy", float("nan")),
            "rust/dataloader": rust / eps.get("dataloader", float("nan")),
            "rust % memcpy": 100 * rust / eps.get("memcpy", float("nan")),
            "memcpy/dataloader": eps.get("memcpy", float("nan"))
            / eps.get("dataloader", float("nan")),
        })
    return out


def sampler_alloc_probe(images: np.ndarray, labels: np.ndarray,
                        settings: Sequence[tuple[int, int, int]] = DEFAULT_SAMPLER_SETTINGS,
                        batch: int = DEFAULT_BATCH, dtypes: Sequence[str] = DTYPES,
                        repeats: int = 7, min_time: float = 0.1) -> list[dict]:
    """Diagnostic: the same Rust fill with fresh ``torch.empty`` outputs (``sample_batch``),
    fresh ``np.empty`` outputs, and reused outputs, with page faults per batch: separates
    the kernel from the cost of first-touching freshly mapped output pages."""
    rows = []
    item = int(np.prod(images.shape[1:]))
    for ways, shots, queries in settings:
        for dtype in dtypes:
            sampler = EpisodeSampler((images, labels), ways=ways, shots=shots,
                                     queries=queries, seed=0, dtype=dtype)
            cands = {a: _rust_batches(sampler, batch, a)
                     for a in ("sample_batch", "np.empty", "reused")}
            faults: dict[str, float] = {}
            times = measure(cands, repeats, min_time, faults)
            nbytes = _batch_bytes(ways, shots, queries, batch, item, dtype)
            base = min(times["sample_batch"])
            for name, samples in times.items():
                t_best, t_med = _stats(samples)
                rows.append({
                    "setting": _setting(ways, shots, queries), "dtype": dtype,
                    "batch MiB": nbytes / (1 << 20), "outputs": name,
                    "ms/batch": t_best * 1e3, "median ms": t_med * 1e3,
                    "GB/s": nbytes / t_best / 1e9, "faults/batch": faults[name],
                    "speedup vs sample_batch": base / t_best,
                })
            gc.collect()
    return rows


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _malloc_trim() -> None:
    """Returns freed heap memory to the OS (glibc only), so RSS starts from a clean heap."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def sampler_memory(images: np.ndarray, labels: np.ndarray, ways: int = 5, shots: int = 1,
                   queries: int = 15, batch: int = DEFAULT_BATCH, dtype: str = "float32",
                   warmup: int = 50, batches: int = 500, hold: int = 10) -> dict:
    """Resident memory (VmRSS, MiB) around sampling.

    Building the sampler (the dataset is referenced, never copied: only the class index is
    added); ``warmup`` batches dropped one by one (malloc keeps some freed output buffers
    on its free lists: a few batches at most); ``batches`` more (steady state: about 0, no
    leak and no per-batch copy of anything but the outputs); then ``hold`` batches kept
    alive (``held/batch`` about 1 or less: only the output buffers grow RSS).
    """
    gc.collect()
    _malloc_trim()
    start = _rss_bytes()
    sampler = EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries,
                             seed=0, dtype=dtype)
    built = _rss_bytes()
    for i in range(warmup):
        sampler.sample_batch(i * batch, batch)
    warm = _rss_bytes()
    for i in range(warmup, warmup + batches):
        sampler.sample_batch(i * batch, batch)
    gc.collect()
    after = _rss_bytes()
    kept = [sampler.sample_batch(i * batch, batch) for i in range(hold)]
    holding = _rss_bytes()
    nbytes = sum(t.numel() * t.element_size() for t in vars(kept[0]).values())
    del kept
    mib = 1 << 20
    return {
        "setting": _setting(ways, shots, queries), "batch": batch, "dtype": dtype,
        "dataset": images.nbytes / mib, "batch out": nbytes / mib, "RSS start": start / mib,
        "+sampler": (built - start) / mib, f"+{warmup} warm-up": (warm - built) / mib,
        f"+{batches} more": (after - warm) / mib, f"+{hold} held": (holding - after) / mib,
        "held/batch out": (holding - after) / (hold * nbytes),
    }


# ---------------------------------------------------------------- kernel candidates

def kernel_flops(shape: tuple[int, int, int, int, int], mode: str) -> int:
    """FLOPs counted for one call (see the module docstring)."""
    b, n, k, q, d = shape
    gemm, protos = 2 * b * q * n * d, b * n * k * d
    return gemm + protos if mode == "fwd" else 3 * gemm + 2 * protos


def _torch_protos(s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    return s.view(s.shape[0], n, k, s.shape[-1]).mean(2)


def _dist_expand(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return ((q[:, :, None] - p[:, None]) ** 2).sum(-1)


def _dist_gemm(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    qq = (q * q).sum(-1, keepdim=True)
    pp = (p * p).sum(-1)[:, None, :]
    return (qq + pp - 2 * q @ p.transpose(1, 2)).clamp_min(0)


def _dist_cdist(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return torch.cdist(q, p) ** 2


_TORCH_DIST = {"torch_expand": _dist_expand, "torch_gemm": _dist_gemm,
               "torch_cdist": _dist_cdist}


def kernel_inputs(shape: tuple[int, int, int, int, int], grad: bool, seed: int = 0):
    """``(support (B, N*K, D), labels (B, N*K) grouped by class, query (B, Q, D), weight
    (B, Q, N))``, float32."""
    b, n, k, q, d = shape
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(b, n * k, d, generator=g).requires_grad_(grad)
    query = torch.randn(b, q, d, generator=g).requires_grad_(grad)
    labels = torch.arange(n).repeat_interleave(k).repeat(b, 1)
    weight = torch.rand(b, q, n, generator=g)
    return support, labels, query, weight


def default_kernel_candidates() -> tuple[str, ...]:
    """``rust``, the torch expressions at torch's thread count and, when that is above one,
    the same expressions run single-threaded (``/1t``): on a small or shared machine the
    OpenMP threads of torch can cost more than they gain, so both count as references."""
    names = KERNEL_CANDIDATES
    if torch.get_num_threads() > 1:
        names += tuple(f"{n}/1t" for n in KERNEL_CANDIDATES if n != "rust")
    return names


def _single_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(prev)

    return call


def kernel_candidates(shape: tuple[int, int, int, int, int], mode: str, seed: int = 0,
                      names: Iterable[str] | None = None) -> dict[str, Callable]:
    """Zero-argument callables: one forward (``mode="fwd"``) or forward+backward call.

    names: ``rust``, ``torch_expand``, ``torch_gemm``, ``torch_cdist``, each torch name
    optionally with ``/1t`` (run with ``torch.set_num_threads(1)``); default
    :func:`default_kernel_candidates`.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    _, n, k, _, _ = shape
    grad = mode == "fwd+bwd"
    s, lab, q, w = kernel_inputs(shape, grad, seed)

    def make(dist_fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        if not grad:
            return dist_fn

        def step() -> torch.Tensor:
            s.grad = q.grad = None
            d = dist_fn()
            d.backward(w)
            return d

        return step

    out: dict[str, Callable] = {}
    for name in default_kernel_candidates() if names is None else names:
        base, _, suffix = name.partition("/")
        if base == "rust" and not suffix:
            out[name] = make(lambda: ops.prototype_distances(s, lab, q, n))
        elif base in _TORCH_DIST and suffix in ("", "1t"):
            fn = make(lambda f=_TORCH_DIST[base]: f(q, _torch_protos(s, n, k)))
            out[name] = _single_thread(fn) if suffix else fn
        else:
            raise ValueError(f"kernel candidate: expected rust or one of "
                             f"{KERNEL_CANDIDATES[1:]} (optionally with /1t), got {name!r}")
    return out


def _check_agree(cands: dict[str, Callable]) -> None:
    """Every candidate computes the same distances as ``rust`` (so the timings compare the
    same work)."""
    with torch.no_grad():
        ref = cands["rust"]()
        tol = 1e-4 * float(ref.abs().max())
        for name, fn in cands.items():
            got = fn()
            if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-4, atol=tol):
                raise AssertionError(f"kernel candidate {name}: result differs from rust")


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ",".join(str(v) for v in shape) + ")"


def bench_kernels(
    shapes: Sequence[tuple[int, int, int, int, int]] = DEFAULT_KERNEL_SHAPES,
    modes: Sequence[str] = MODES,
    repeats: int = 7,
    min_time: float = 0.1,
    names: Sequence[str] | None = None,
) -> list[dict]:
    """One row per (shape, mode, candidate): ms/call, GFLOP/s, speedup of Rust over it."""
    rows = []
    for shape in shapes:
        for mode in modes:
            cands = kernel_candidates(shape, mode, names=names)
            if mode == "fwd" and "rust" in cands:
                _check_agree(cands)
            faults: dict[str, float] = {}
            times = measure(cands, repeats, min_time, faults)
            flops = kernel_flops(shape, mode)
            best = {n: _stats(t)[0] for n, t in times.items()}
            for name, samples in times.items():
                t_best, t_med = _stats(samples)
                rows.append({
                    "shape (B,N,K,Q,D)": _shape_str(shape), "mode": mode, "candidate": name,
                    "ms/call": t_best * 1e3, "median ms": t_med * 1e3,
                    "GFLOP/s": flops / t_best / 1e9, "faults/call": faults[name],
                    "rust speedup": best["rust"] / t_best if "rust" in best else float("nan"),
                })
            gc.collect()
    return rows


def kernel_summary(rows: list[dict]) -> list[dict]:
    """Per (shape, mode): Rust vs the fastest torch candidate."""
    out = []
    key = "shape (B,N,K,Q,D)"
    for shape, mode in dict.fromkeys((r[key], r["mode"]) for r in rows):
        group = [r for r in rows if r[key] == shape and r["mode"] == mode]
        rust = next((r for r in group if r["candidate"] == "rust"), None)
        torch_rows = [r for r in group if r["candidate"].startswith("torch")]
        if rust is None or not torch_rows:
            continue
        best = min(torch_rows, key=lambda r: r["ms/call"])
        out.append({
            key: shape, "mode": mode, "rust ms": rust["ms/call"],
            "rust GFLOP/s": rust["GFLOP/s"], "best torch": best["candidate"],
            "torch ms": best["ms/call"], "rust speedup": best["ms/call"] / rust["ms/call"],
        })
    return out


def kernel_overhead_probe(shape: tuple[int, int, int, int, int] = SMALL_KERNEL_SHAPE,
                          repeats: int = 7, min_time: float = 0.1) -> list[dict]:
    """Diagnostic: where the time of the fused Rust op goes at one shape: the public op
    (argument checks, tensor <-> NumPy views, autograd Function and engine) against the
    bare ``_core.proto_distances`` / ``_core.proto_distances_backward`` calls on NumPy
    arrays; the last rows are the differences of best times (the wrapper overhead)."""
    b, n, k, q, d = shape
    s, lab, qr, w = kernel_inputs(shape, True)
    sn, ln, qn, wn = s.detach().numpy(), lab.numpy(), qr.detach().numpy(), w.numpy()
    _, protos = _core.proto_distances(sn, ln, qn, n, "sqeuclidean")
    s0, q0 = s.detach(), qr.detach()

    def core_fwd_bwd() -> Any:
        _, p = _core.proto_distances(sn, ln, qn, n, "sqeuclidean")
        return _core.proto_distances_backward(sn, ln, qn, p, wn, n, "sqeuclidean")

    cands = {
        "ops.prototype_distances fwd": lambda: ops.prototype_distances(s0, lab, q0, n),
        "_core.proto_distances": lambda: _core.proto_distances(sn, ln, qn, n, "sqeuclidean"),
        "_core.proto_distances_backward": lambda: _core.proto_distances_backward(
            sn, ln, qn, protos, wn, n, "sqeuclidean"),
        "ops fwd+bwd (autograd)": kernel_candidates(shape, "fwd+bwd", names=["rust"])["rust"],
        "_core fwd then backward": core_fwd_bwd,
    }
    fwd, fb = kernel_flops(shape, "fwd"), kernel_flops(shape, "fwd+bwd")
    flops = {"ops.prototype_distances fwd": fwd, "_core.proto_distances": fwd,
             "_core.proto_distances_backward": fb - fwd, "ops fwd+bwd (autograd)": fb,
             "_core fwd then backward": fb}
    times = measure(cands, repeats, min_time)
    best = {name: min(t) for name, t in times.items()}
    rows = []
    for name, samples in times.items():
        t_best, t_med = _stats(samples)
        rows.append({"shape (B,N,K,Q,D)": _shape_str(shape), "call": name,
                     "us/call": t_best * 1e6, "median us": t_med * 1e6,
                     "GFLOP/s": flops[name] / t_best / 1e9})
    for label, a, c in (
        ("fwd wrapper overhead (ops fwd - _core fwd)",
         "ops.prototype_distances fwd", "_core.proto_distances"),
        ("fwd+bwd wrapper overhead (ops - _core, autograd incl.)",
         "ops fwd+bwd (autograd)", "_core fwd then backward"),
    ):
        rows.append({"shape (B,N,K,Q,D)": _shape_str(shape), "call": label,
                     "us/call": (best[a] - best[c]) * 1e6, "median us": float("nan"),
                     "GFLOP/s": float("nan")})
    return rows


# ---------------------------------------------------------------- MAML meta-training

MAML_ORDERS = ("second", "first")
MAML_CANDIDATES = ("loop", "threads", "vmap", "reference", "plain", "unfused")
DEFAULT_MAML_TASKS = 32
DEFAULT_MAML_REPEATS = 3
MAML_SETTING = (5, 1, 15)  # ways, shots, queries per class
MAML_MODEL = "conv4_finn"
MAML_INNER_LR = 0.4
MAML_INNER_STEPS = 1


def maml_batch(tasks: int = DEFAULT_MAML_TASKS, ways: int = 5, shots: int = 1,
               queries: int = 15, images: np.ndarray | None = None,
               labels: np.ndarray | None = None, data_root: str | None = None,
               device: str | torch.device = "cpu", seed: int = 0) -> Episode:
    """One meta-batch of ``tasks`` float32 episodes (``omniglot_like`` data unless
    ``images``/``labels`` are given), on ``device``."""
    if images is None or labels is None:
        images, labels, _ = omniglot_like(data_root)
    sampler = EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries,
                             seed=seed, dtype="float32")
    return sampler.sample_batch(0, tasks).to(device)


def _image_shape(batch: Episode) -> tuple[int, int]:
    return int(batch.support_x.shape[2]), int(batch.support_x.shape[-1])


def _maml_learner(batch: Episode, order: str, path: str, ways: int, seed: int,
                  fuse: bool = True):
    # the model takes the batch's device and dtype
    from .learners import MAML
    from .models import build_model

    channels, size = _image_shape(batch)
    torch.manual_seed(seed)
    body = build_model(MAML_MODEL, in_channels=channels, image_size=size)
    learner = MAML(body, inner_lr=MAML_INNER_LR, inner_steps=MAML_INNER_STEPS, order=order,
                   ways=ways, path=path, fuse_first_block=fuse)
    return learner.to(batch.support_x.device, batch.support_x.dtype).train()


class _RefClassifier(nn.Module):
    """Backbone + linear head; parameter names as in MAML's classifier (``body.``/``head.``)."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def _clone_module(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters are ``p.clone()`` (so gradients flow back to the
    originals), submodules copied the same way; the mechanics of learn2learn's
    ``clone_module``: the module object and its dictionaries are copied, not deep-copied."""
    clone = module.__new__(type(module))
    clone.__dict__ = module.__dict__.copy()
    clone._parameters = {k: None if p is None else p.clone()
                         for k, p in module._parameters.items()}
    clone._buffers = module._buffers.copy()
    clone._modules = {k: None if m is None else _clone_module(m)
                      for k, m in module._modules.items()}
    return clone


def _update_module(module: nn.Module, updates: dict[int, torch.Tensor]) -> None:
    """Replaces every parameter ``p`` of ``module`` by ``p + updates[id(p)]``, walking the
    submodules (learn2learn's ``update_module``)."""
    for k, p in module._parameters.items():
        if p is not None:
            module._parameters[k] = p + updates[id(p)]
    for m in module._modules.values():
        if m is not None:
            _update_module(m, updates)


class ReferenceMAML:
    """MAML the way learn2learn's ``MAML`` wrapper runs it, written out (no learn2learn
    dependency): for each task, clone the module (``style="learn2learn"``:
    learn2learn's ``clone_module`` and ``update_module`` mechanics, the adapted module called
    as usual; ``style="functional"``: cloned parameters applied with
    ``torch.func.functional_call``, a leaner plain autograd loop), take ``inner_steps`` steps
    of ``p - lr * g`` with ``g = torch.autograd.grad(support loss, params,
    create_graph=second_order)`` (first order: no graph, ``g`` detached), then
    ``(query loss / tasks).backward()`` per task, accumulating into the meta-parameters'
    ``.grad``.

    ``net`` must use batch statistics in every forward (BatchNorm without running
    statistics, training mode), as learn2learn's Omniglot CNN does.
    """

    STYLES = ("learn2learn", "functional")

    def __init__(self, net: nn.Module, inner_lr: float = MAML_INNER_LR,
                 inner_steps: int = MAML_INNER_STEPS, order: str = "second",
                 style: str = "learn2learn") -> None:
        if order not in MAML_ORDERS:
            raise ValueError(f"order: expected one of {MAML_ORDERS}, got {order!r}")
        if style not in self.STYLES:
            raise ValueError(f"style: expected one of {self.STYLES}, got {style!r}")
        self.net, self.inner_lr, self.inner_steps = net, inner_lr, inner_steps
        self.second_order = order == "second"
        self.style = style

    def _adapted_query_loss(self, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                            qy: torch.Tensor) -> torch.Tensor:
        lr, second = self.inner_lr, self.second_order
        if self.style == "learn2learn":
            learner = _clone_module(self.net)
            for _ in range(self.inner_steps):
                params = list(learner.parameters())
                grads = torch.autograd.grad(F.cross_entropy(learner(sx), sy), params,
                                            create_graph=second, retain_graph=second)
                _update_module(learner, {id(p): -lr * (g if second else g.detach())
                                         for p, g in zip(params, grads)})
            return F.cross_entropy(learner(qx), qy)
        fast = {n: p.clone() for n, p in self.net.named_parameters()}
        for _ in range(self.inner_steps):
            loss = F.cross_entropy(functional_call(self.net, fast, (sx,)), sy)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=second,
                                        retain_graph=second)
            fast = {n: p - lr * (g if second else g.detach())
                    for (n, p), g in zip(fast.items(), grads)}
        return F.cross_entropy(functional_call(self.net, fast, (qx,)), qy)

    def meta_backward(self, batch: Episode, ways: int | None = None) -> float:
        """Mean query loss over the batch's tasks; the meta-gradient lands in ``.grad``."""
        b = batch.support_x.shape[0]
        total = 0.0
        for i in range(b):
            qloss = self._adapted_query_loss(batch.support_x[i], batch.support_y[i],
                                             batch.query_x[i], batch.query_y[i])
            (qloss / b).backward()
            total += float(qloss.detach())
        return total / b


def _reference_net(batch: Episode, ways: int, seed: int) -> nn.Module:
    """The reference's own network: built like the learners' (same seed, so the same initial
    weights), BatchNorm switched to batch statistics only, in training mode."""
    from .models import build_model

    channels, size = _image_shape(batch)
    torch.manual_seed(seed)
    body = build_model(MAML_MODEL, in_channels=channels, image_size=size)
    head = nn.Linear(body.out_features, ways)
    for m in body.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return _RefClassifier(body, head).to(batch.support_x.device, batch.support_x.dtype).train()


def maml_candidates(batch: Episode, order: str, names: Iterable[str] = MAML_CANDIDATES,
                    ways: int | None = None, seed: int = 0) -> dict[str, Callable]:
    """Zero-argument callables, one meta-training step each (``zero_grad`` + meta-gradient
    of ``batch``), returning the network whose parameters hold the gradient (names
    ``body.*``/``head.*`` for every candidate). Every candidate has its own copy of the same
    initial weights (built in float32, then cast to the batch's dtype). names: ``loop``,
    ``vmap``, ``auto`` (metarobust's MAML with that path), ``reference``
    (:class:`ReferenceMAML`)."""
    if order not in MAML_ORDERS:
        raise ValueError(f"order: expected one of {MAML_ORDERS}, got {order!r}")
    ways = int(batch.support_y.max()) + 1 if ways is None else ways
    sync = batch.support_x.device.type == "cuda"
    out: dict[str, Callable] = {}
    for name in names:
        if name in ("loop", "threads", "vmap", "auto", "unfused"):
            learner = (_maml_learner(batch, order, "auto", ways, seed, fuse=False)
                       if name == "unfused" else _maml_learner(batch, order, name, ways, seed))

            def step(learner: Any = learner) -> nn.Module:
                learner.zero_grad(set_to_none=True)
                learner.meta_backward(batch, ways)
                if sync:
                    torch.cuda.synchronize()
                return learner.net
        elif name in ("reference", "plain"):
            ref = ReferenceMAML(_reference_net(batch, ways, seed), order=order,
                                style="learn2learn" if name == "reference" else "functional")

            def step(ref: ReferenceMAML = ref) -> nn.Module:
                ref.net.zero_grad(set_to_none=True)
                ref.meta_backward(batch, ways)
                if sync:
                    torch.cuda.synchronize()
                return ref.net
        else:
            raise ValueError(f"maml candidate: expected loop, threads, vmap, auto, "
                             f"unfused, reference or plain, got {name!r}")
        out[name] = step
    return out


def maml_auto_path(device: str | torch.device = "cpu", tasks: int = DEFAULT_MAML_TASKS) -> str:
    """The path ``MAML(path="auto")`` takes for the benchmark's Conv-4 on ``device``, with
    a meta-batch of ``tasks`` and torch's current thread count."""
    from .learners import MAML
    from .models import build_model

    learner = MAML(build_model(MAML_MODEL, 1, 28, filters=1), ways=2, path="auto")
    x = torch.empty(0, device=device)
    if learner._use_vmap(x):
        return "vmap"
    return "threads" if learner._task_threads(x, tasks) else "loop"


def check_maml_agree(batch: Episode, order: str, names: Iterable[str] = MAML_CANDIDATES,
                     tasks: int | None = 2, ways: int | None = None, seed: int = 0,
                     dtype: torch.dtype | None = torch.float64,
                     rtol: float | None = None) -> dict[str, float]:
    """Every candidate's meta-gradient on the first ``tasks`` tasks of ``batch`` (None: all),
    from the same initial weights, against the reference's: raises AssertionError unless
    each parameter's gradient is ``allclose`` with ``rtol`` and ``atol = rtol * s``, where
    ``s`` is the larger of that parameter's ``max|reference grad|`` and 1% of the largest
    over all parameters (the biases of convolutions followed by BatchNorm have a zero
    meta-gradient up to rounding). Returns each candidate's largest ``max|g - g_ref| / s``.

    dtype: the models and images are cast to it (None: as given). float64 (the default,
    ``rtol`` 1e-6) checks that the candidates compute the same function tightly: there
    every path agrees with the reference to about 1e-12. In float32 (``rtol`` 5e-2) the
    loop path still agrees to about 1e-7 (the very same operations), but the vmap path only
    to 1-2e-2 on random-pixel images: the second derivative through native
    ``F.batch_norm`` in float32 (loop and reference alike) is itself about 1% off the
    float64 value there, while the vmap path's elementary-op BatchNorm stays within 1e-4."""
    if dtype is not None:
        batch = dataclasses.replace(batch, support_x=batch.support_x.to(dtype),
                                    query_x=batch.query_x.to(dtype))
    if rtol is None:
        rtol = 1e-6 if batch.support_x.dtype == torch.float64 else 5e-2
    if tasks is not None:
        batch = Episode(*(getattr(batch, f)[:tasks] for f in _EPISODE_FIELDS))
    names = list(dict.fromkeys(["reference", *names]))
    cands = maml_candidates(batch, order, names, ways, seed)
    ref = {n: p.grad.detach().clone() for n, p in cands["reference"]().named_parameters()}
    out = {}
    for name in names:
        if name == "reference":
            continue
        got = dict(cands[name]().named_parameters())
        if set(got) != set(ref):
            raise AssertionError(f"maml candidate {name}: parameters differ from the "
                                 f"reference's: {sorted(set(got) ^ set(ref))}")
        worst = 0.0
        top = max(float(g.abs().max()) for g in ref.values())
        for n, g_ref in ref.items():
            g = got[n].grad
            scale = max(float(g_ref.abs().max()), 0.01 * top)
            if g is None or not torch.allclose(g, g_ref, rtol=rtol, atol=rtol * scale):
                err = float("inf") if g is None else float((g - g_ref).abs().max())
                raise AssertionError(f"maml candidate {name} ({order} order): meta-gradient "
                                     f"of {n} differs from the reference (max abs error "
                                     f"{err:.3g}, scale {scale:.3g})")
            worst = max(worst, float((g - g_ref).abs().max()) / max(scale, 1e-30))
        out[name] = worst
    return out


def measure_steps(candidates: dict[str, Callable[[], Any]], repeats: int = 3,
                  warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call, one call per candidate per round, ``repeats`` rounds interleaved
    in rotating order after ``warmup`` untimed calls each (for calls long enough to time
    one by one, such as a meta-training step). ``gc.collect()`` before each call, garbage
    collection off during it."""
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            enabled = gc.isenabled()
            gc.disable()
            try:
                t0 = time.perf_counter()
                candidates[name]()
                times[name].append(time.perf_counter() - t0)
            finally:
                if enabled:
                    gc.enable()
    return times


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak resident set (VmHWM) to the current one (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maml_memory_child(spec_json: str) -> None:
    """Entry point of :func:`maml_peak_memory`'s subprocess: prints one JSON line."""
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    saved = torch.load(spec["batch"], map_location=spec["device"])
    peak, method = _maml_step_peak(Episode(**saved), spec["order"], spec["candidate"],
                                   spec["ways"], spec["seed"])
    print(json.dumps({"peak_bytes": peak, "method": method}))


def _maml_step_peak(batch: Episode, order: str, candidate: str, ways: int,
                    seed: int) -> tuple[int, str]:
    """Peak extra bytes of one step of ``candidate`` after a warm-up step (-1: unavailable)
    and how they were read."""
    fn = maml_candidates(batch, order, [candidate], ways, seed)[candidate]
    cuda = batch.support_x.device.type == "cuda"
    fn()  # warm-up: one-time allocations (thread pools, kernel caches, .grad tensors)
    gc.collect()
    _malloc_trim()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base, "cuda max_memory_allocated"
    base_kib = _proc_status_kib("VmRSS")
    if base_kib is not None and _reset_peak_rss():
        fn()
        return (_proc_status_kib("VmHWM") - base_kib) * 1024, "VmHWM - VmRSS"
    # no /proc: ru_maxrss already holds the warm-up's peak; a fresh process would be needed
    return -1, "unavailable"


def _save_batch(batch: Episode, path: str) -> None:
    torch.save({f: getattr(batch, f).cpu() for f in _EPISODE_FIELDS}, path)


def maml_peak_memory(batch: Episode, order: str, candidate: str, ways: int | None = None,
                     seed: int = 0, batch_path: str | None = None,
                     timeout: float = 600) -> float:
    """Peak extra memory (MiB) of one meta-training step of ``candidate``, measured in a
    fresh Python subprocess (see the module docstring); NaN where it cannot be measured.
    On CUDA the allocator's own peak counter is exact, so the step runs in this process.
    ``batch_path``: the batch already saved with ``torch.save`` (saved here otherwise)."""
    ways = int(batch.support_y.max()) + 1 if ways is None else ways
    if batch.support_x.device.type == "cuda":
        return _maml_step_peak(batch, order, candidate, ways, seed)[0] / (1 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        if batch_path is None:
            batch_path = os.path.join(tmp, "batch.pt")
            _save_batch(batch, batch_path)
        spec = {"batch": batch_path, "order": order, "candidate": candidate, "ways": ways,
                "seed": seed, "device": str(batch.support_x.device),
                "threads": torch.get_num_threads()}
        code = ("import sys; from metarobust.bench import _maml_memory_child; "
                "_maml_memory_child(sys.argv[1])")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"maml_peak_memory({candidate}, {order}): the subprocess failed:\n"
                           f"{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return float("nan") if res["peak_bytes"] < 0 else res["peak_bytes"] / (1 << 20)


def _maml_label(name: str, auto: str) -> str:
    if name == "reference":
        return "reference (learn2learn-style)"
    if name == "plain":
        return "plain loop (functional_call)"
    if name == "unfused":
        return f"metarobust {auto}, torch first block"
    return f"metarobust {name}" + (" (auto)" if name == auto else "")


def bench_maml(batch: Episode | None = None, tasks: int = DEFAULT_MAML_TASKS,
               orders: Sequence[str] = MAML_ORDERS,
               names: Sequence[str] = MAML_CANDIDATES, repeats: int = DEFAULT_MAML_REPEATS,
               ways: int = 5, shots: int = 1, queries: int = 15,
               device: str | torch.device = "cpu", data_root: str | None = None,
               memory: bool = True, check: bool = True, seed: int = 0) -> list[dict]:
    """One row per (order, candidate): s/step, tasks/s, peak MiB, speed relative to the
    reference. ``batch`` (default: ``maml_batch(tasks, ways, shots, queries)``) fixes the
    meta-batch. check: :func:`check_maml_agree` first (float64, the first 2 tasks;
    ``grad err``: the largest relative meta-gradient difference from the reference);
    memory: peak memory
    per candidate, each in its own subprocess, before the timings."""
    if batch is None:
        batch = maml_batch(tasks, ways, shots, queries, data_root=data_root, device=device)
    b = batch.support_x.shape[0]
    ways = int(batch.support_y.max()) + 1
    auto = maml_auto_path(batch.support_x.device, b)
    if batch.support_x.device.type != "cpu":  # the fused block is CPU-only
        names = [n for n in names if n != "unfused"]
    err: dict[tuple[str, str], float] = {}
    if check:
        for order in orders:
            for name, e in check_maml_agree(batch, order, names, ways=ways, seed=seed).items():
                err[order, name] = e
            err[order, "reference"] = 0.0
    peak: dict[tuple[str, str], float] = {}
    if memory:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "batch.pt")
            _save_batch(batch, path)
            for order in orders:
                for name in names:
                    peak[order, name] = maml_peak_memory(batch, order, name, ways, seed,
                                                         batch_path=path)
    cands = {}
    for order in orders:
        for name, fn in maml_candidates(batch, order, names, ways, seed).items():
            cands[f"{order}/{name}"] = fn
    times = measure_steps(cands, repeats)
    rows = []
    for order in orders:
        ref_best = min(times[f"{order}/reference"]) if "reference" in names else float("nan")
        for name in names:
            t_best, t_med = _stats(times[f"{order}/{name}"])
            rows.append({
                "order": order, "tasks": b, "candidate": _maml_label(name, auto),
                "s/step": t_best, "median s": t_med, "tasks/s": b / t_best,
                "median tasks/s": b / t_med, "peak MiB": peak.get((order, name), float("nan")),
                "vs reference": ref_best / t_best,
                "grad err": f"{err[order, name]:.1e}" if (order, name) in err else "-",
            })
    return rows


def maml_summary(rows: list[dict]) -> list[dict]:
    """Per order: metarobust's default path (``auto``) and its best path against the
    reference (tasks/s ratios of best rounds, and peak memory ratio)."""
    out = []
    for order in dict.fromkeys(r["order"] for r in rows):
        group = [r for r in rows if r["order"] == order]
        ref = next((r for r in group if r["candidate"].startswith("reference")), None)
        auto = next((r for r in group if r["candidate"].endswith("(auto)")), None)
        ours = [r for r in group if r["candidate"].startswith("metarobust")
                and not r["candidate"].endswith("torch first block")]  # paths only
        if ref is None or auto is None or not ours:
            continue
        best = max(ours, key=lambda r: r["tasks/s"])
        out.append({
            "order": order, "tasks": auto["tasks"],
            "auto path": auto["candidate"].split()[1],
            "auto tasks/s": auto["tasks/s"], "reference tasks/s": ref["tasks/s"],
            "auto/reference": auto["tasks/s"] / ref["tasks/s"],
            "best path": best["candidate"].split()[1],
            "best/reference": best["tasks/s"] / ref["tasks/s"],
            "auto/reference peak MiB": auto["peak MiB"] / ref["peak MiB"],
        })
    return out


# ---------------------------------------------------------------- corruptions

def corruption_candidates(images: np.ndarray, labels: np.ndarray,
                          setting: tuple[int, int, int] = CORRUPTION_SETTING,
                          batch: int = DEFAULT_BATCH, dtype: str = "float32",
                          severity: int = CORRUPTION_SEVERITY, seed: int = 0,
                          names: Iterable[str] | None = None,
                          cache: bool = True) -> dict[str, Callable]:
    """``clean`` and one candidate per corruption name: consecutive ``sample_batch`` calls
    of the same sampler settings, the corrupted ones with ``corruption=name`` (queries).

    cache: the samplers' default corruption cache (see :class:`EpisodeSampler`), warmed up
    here until built where the corruption has one: the steady state of a long run. False:
    every corrupted item computed (``corruption_cache_mb=0``). Each candidate's ``cached``
    attribute says whether its sampler reads a built cache."""
    ways, shots, queries = setting
    names = ("clean", *CORRUPTIONS) if names is None else tuple(names)
    out: dict[str, Callable] = {}
    for name in names:
        if name != "clean" and name not in CORRUPTIONS:
            raise ValueError(f"corruption candidate: expected 'clean' or one of "
                             f"{CORRUPTIONS}, got {name!r}")
        corruption = {} if name == "clean" else dict(corruption=name, severity=severity)
        sampler = EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries,
                                 seed=seed, dtype=dtype, **corruption,
                                 corruption_cache_mb=256 if cache else 0)
        fn = _rust_batches(sampler, batch)
        if name != "clean" and cache:
            # A cache of at most two results per image is built once the batches have
            # corrupted that many items.
            per_batch = batch * ways * queries
            for _ in range(-(-2 * len(images) // max(per_batch, 1)) + 1):
                if sampler._core.cache_built(dtype):
                    break
                fn()
        fn.cached = name != "clean" and sampler._core.cache_built(dtype)  # type: ignore[attr-defined]
        out[name] = fn
    return out


def bench_corruptions(images: np.ndarray | None = None, labels: np.ndarray | None = None,
                      setting: tuple[int, int, int] = CORRUPTION_SETTING,
                      batch: int = DEFAULT_BATCH, dtypes: Sequence[str] = DTYPES,
                      severity: int = CORRUPTION_SEVERITY, repeats: int = 7,
                      min_time: float = 0.1,
                      names: Iterable[str] | None = None) -> list[dict]:
    """One row per (dtype, candidate): ms per batch, episodes/s and ``x clean`` (time per
    batch over the clean sampler's, best rounds, measured interleaved in one process).
    ``cache``: "built" (the default sampler, its corruption cache built), "none" (the
    corruption has no cache) or "off" (the same corruption computed for every item)."""
    if images is None or labels is None:
        images, labels, _ = omniglot_like()
    rows = []
    for dtype in dtypes:
        cands = corruption_candidates(images, labels, setting, batch, dtype, severity,
                                      names=names)
        if "clean" not in cands:
            cands = corruption_candidates(images, labels, setting, batch, dtype, severity,
                                          names=["clean"]) | cands
        cached = [n for n, fn in cands.items() if fn.cached]  # type: ignore[attr-defined]
        off = corruption_candidates(images, labels, setting, batch, dtype, severity,
                                    names=cached, cache=False)
        cands |= {f"{n} (cache off)": fn for n, fn in off.items()}
        times = measure(cands, repeats, min_time)
        clean = _stats(times["clean"])[0]
        for key, samples in times.items():
            t_best, t_med = _stats(samples)
            name = key.removesuffix(" (cache off)")
            rows.append({
                "setting": _setting(*setting), "batch": batch, "dtype": dtype,
                "severity": severity, "corruption": name,
                "cache": "-" if name == "clean" else "off" if key != name
                else "built" if name in cached else "none",
                "ms/batch": t_best * 1e3, "median ms": t_med * 1e3,
                "episodes/s": batch / t_best, "x clean": t_best / clean,
            })
        gc.collect()
    return rows


def corruption_summary(rows: list[dict]) -> list[dict]:
    """Per corruption: the corrupted/clean time ratio of each dtype side by side, with the
    sampler's default (its cache where the corruption has one) and with the cache off."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["corruption"] == "clean":
            continue
        row = out.setdefault(r["corruption"], {"corruption": r["corruption"],
                                               "severity": r["severity"], "cached": "no"})
        if r["cache"] == "off":
            row[f"{r['dtype']} cache off"] = r["x clean"]
        else:
            row[f"{r['dtype']} corrupted/clean"] = r["x clean"]
            row.setdefault(f"{r['dtype']} cache off", math.nan)
            if r["cache"] == "built":
                row["cached"] = "yes"
    return list(out.values())


def check_targets(sampler_rows: list[dict] | None = None,
                  kernel_rows: list[dict] | None = None,
                  maml_rows: list[dict] | None = None, device: str = "cpu",
                  corruption_rows: list[dict] | None = None) -> list[dict]:
    """Each target of :data:`TARGETS` that the rows cover: measured ratio, goal, met.
    The MAML target (second order, default path / reference) applies on the CPU only; the
    corruption target is an upper bound, on the default setting and batch."""
    out = []

    def add(what: str, value: float, goal: float, at_most: bool = False) -> None:
        met = value <= goal if at_most else value >= goal
        out.append({"target": what, "measured": value, "goal": goal,
                    "met": "yes" if met else "NO"})

    batch64 = [r for r in sampler_rows or [] if r["batch"] == DEFAULT_BATCH]
    for r in sampler_summary(batch64):
        tag = f"sampler {r['setting']} {r['dtype']}"
        add(f"{tag}: rust/numpy", r["rust/numpy"], TARGETS["sampler_vs_numpy"])
        if r["setting"] == "5w1s15q":
            add(f"{tag}: rust/dataloader", r["rust/dataloader"],
                TARGETS["sampler_vs_dataloader"])
            add(f"{tag}: rust % memcpy", r["rust % memcpy"], TARGETS["sampler_pct_memcpy"])
    known = {_shape_str(v) for v in DEFAULT_KERNEL_SHAPES}
    for r in kernel_summary(kernel_rows or []):
        if r["shape (B,N,K,Q,D)"] not in known:
            continue
        small = r["shape (B,N,K,Q,D)"] == _shape_str(SMALL_KERNEL_SHAPE)
        add(f"kernels {r['shape (B,N,K,Q,D)']} {r['mode']}: rust/best torch",
            r["rust speedup"], TARGETS["kernel_small" if small else "kernel_large"])
    if torch.device(device).type == "cpu":
        for r in maml_summary(maml_rows or []):
            if r["order"] == "second":
                add(f"maml second order, {r['tasks']} tasks: auto ({r['auto path']}) / "
                    "reference", r["auto/reference"], TARGETS["maml_vs_reference"])
    for r in corruption_rows or []:
        if (r["corruption"] != "clean" and r.get("cache") != "off"
                and r["batch"] == DEFAULT_BATCH
                and r["setting"] == _setting(*CORRUPTION_SETTING)):
            add(f"corruption {r['corruption']} (severity {r['severity']}) {r['dtype']}: "
                "corrupted/clean (at most)", r["x clean"], TARGETS["corrupted_vs_clean"],
                at_most=True)
    return out


# ---------------------------------------------------------------- output

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 10:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def print_table(rows: list[dict], title: str | None = None, file: Any = None) -> None:
    """Rows (dicts with the same keys) as an aligned text table."""
    file = file or sys.stdout
    if title:
        print(f"\n{title}", file=file)
    if not rows:
        print("(no rows)", file=file)
        return
    cols = list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in cols]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, width, numeric, strict=True)).rstrip()

    print(line(cols), file=file)
    print("  ".join("-" * w for w in width), file=file)
    for row in cells:
        print(line(row), file=file)
    file.flush()


def machine_info() -> dict:
    """CPU model, cores, thread counts and versions: printed above every table."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model, "cores": os.cpu_count(), "usable cores": usable,
        "torch threads": torch.get_num_threads(), "rayon threads": _core.num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "metarobust": _core.__version__,
    }


WHATS = ("sampler", "kernels", "maml", "corruptions", "all")


def run(what: str = "all", *, ways: int | None = None, shots: int | None = None,
        queries: int | None = None, batch: int | None = None, dim: int | None = None,
        tasks: int | None = None, repeats: int | None = None, min_time: float = 0.1,
        data_root: str | None = None, diagnostics: bool = True, device: str = "cpu",
        file: Any = None, severity: int = CORRUPTION_SEVERITY) -> dict:
    """Runs and prints the ``sampler``, ``kernels``, ``maml`` and/or ``corruptions``
    comparisons (``all``: the four); returns all rows.

    ways/shots/queries replace the default sampler settings with one; batch applies to
    every sampler setting. For kernels, any of tasks/ways/shots/queries/dim replaces the
    default shapes with ``(tasks or 32, ways or 5, shots or 5, (ways or 5) * (queries or
    15), dim or 64)``: ``queries`` counts per class, as for the sampler. diagnostics: also
    the resident-memory check, the output-allocation probe and the kernel-overhead probe.
    MAML: meta-batch ``tasks`` (default 32), ``ways or 5``-way ``shots or 1``-shot
    ``queries or 15``-query, on ``device``. repeats: interleaved rounds (default 7;
    MAML 3, one meta-training step per candidate per round). Corruptions: every corruption
    at ``severity`` on the queries of ``ways or 5``-way ``shots or 1``-shot ``queries or
    15``-query episodes, batch ``batch or 64``, against the clean sampler.
    """
    if what not in WHATS:
        raise ValueError(f"what: expected one of {', '.join(WHATS)}, got {what!r}")
    maml_repeats = DEFAULT_MAML_REPEATS if repeats is None else repeats
    repeats = 7 if repeats is None else repeats
    file = file or sys.stdout
    result: dict = {}
    if what in ("sampler", "all"):
        images, labels, source = omniglot_like(data_root)
        print(f"\ndata: {source}, images {images.shape} {images.dtype}", file=file)
        settings = DEFAULT_SAMPLER_SETTINGS
        if ways or shots or queries is not None:
            settings = ((ways or 5, shots or 1, 15 if queries is None else queries),)
        b = batch or DEFAULT_BATCH
        if diagnostics:  # first, on a heap that the other candidates have not grown
            w, s, q = settings[0]
            mem = [sampler_memory(images, labels, w, s, q, b, dt) for dt in DTYPES]
            print_table(mem, "Sampler resident memory (VmRSS, MiB; malloc_trim before the "
                             "start)", file)
            result["sampler_memory"] = mem
        rows = bench_sampler(images, labels, settings, b, repeats=repeats, min_time=min_time)
        print_table(rows, f"Sampler: batches of {b} episodes (best of {repeats} interleaved "
                          "rounds; GB/s counts output bytes)", file)
        summary = sampler_summary(rows)
        print_table(summary, "Sampler ratios (episodes/s ratios; % memcpy: of the memcpy "
                             "rate for the same bytes; memcpy/dataloader: the most any "
                             "sampler could gain over the DataLoader here)", file)
        result["sampler"], result["sampler_summary"] = rows, summary
        if diagnostics:
            probe = sampler_alloc_probe(images, labels, settings, b, repeats=repeats,
                                        min_time=min_time)
            print_table(probe, "Diagnostic: Rust sampler output allocation (same fill call)",
                        file)
            result["sampler_alloc_probe"] = probe
    if what in ("kernels", "all"):
        shapes = DEFAULT_KERNEL_SHAPES
        if any(v is not None for v in (tasks, ways, shots, queries, dim)):
            n = ways or 5
            shapes = ((tasks or 32, n, shots or 5, n * (15 if queries is None else queries),
                       dim or 64),)
        rows = bench_kernels(shapes, repeats=repeats, min_time=min_time)
        print_table(rows, f"Kernels: mean prototypes + squared Euclidean distances, float32 "
                          f"(best of {repeats} interleaved rounds; /1t = torch with 1 "
                          "thread)", file)
        summary = kernel_summary(rows)
        print_table(summary, "Kernel ratios (rust speedup = best torch ms / rust ms)", file)
        result["kernels"], result["kernel_summary"] = rows, summary
        if diagnostics:
            probe = kernel_overhead_probe(shapes[0], repeats=repeats, min_time=min_time)
            print_table(probe, "Diagnostic: fused op, public call vs bare Rust calls", file)
            result["kernel_overhead_probe"] = probe
    if what in ("maml", "all"):
        w, k = ways or 5, shots or 1
        q = 15 if queries is None else queries
        t = tasks or DEFAULT_MAML_TASKS
        meta_batch = maml_batch(t, w, k, q, data_root=data_root, device=device)
        auto = maml_auto_path(device, t)
        print(f"\nMAML: {MAML_MODEL} on {tuple(meta_batch.support_x.shape[2:])} inputs, "
              f"{w}-way {k}-shot {q}-query, meta-batch {t}, {MAML_INNER_STEPS} inner step(s) "
              f"at lr {MAML_INNER_LR}, device {device}: path auto -> {auto}", file=file)
        rows = bench_maml(meta_batch, repeats=maml_repeats, device=device)
        mem = ("VmHWM - VmRSS before the step, fresh subprocess per candidate"
               if torch.device(device).type == "cpu" else
               "cuda max_memory_allocated - allocated before, subprocess per candidate")
        print_table(rows, f"MAML meta-training step (zero_grad + meta-gradient of {t} tasks; "
                          f"best of {maml_repeats} interleaved rounds, median beside; peak "
                          f"MiB: {mem}; grad err: meta-gradient vs the reference's, float64, "
                          "2 tasks, max |difference| / max |reference|)",
                    file)
        summary = maml_summary(rows)
        print_table(summary, "MAML ratios (tasks/s of best rounds; auto = metarobust's "
                             "default path)", file)
        result["maml"], result["maml_summary"] = rows, summary
    if what in ("corruptions", "all"):
        images, labels, source = omniglot_like(data_root)
        setting = (ways or 5, shots or 1, 15 if queries is None else queries)
        b = batch or DEFAULT_BATCH
        print(f"\ndata: {source}, images {images.shape} {images.dtype}", file=file)
        rows = bench_corruptions(images, labels, setting, b, severity=severity,
                                 repeats=repeats, min_time=min_time)
        print_table(rows, f"Corruptions: {_setting(*setting)} batches of {b}, queries "
                          f"corrupted at severity {severity} (best of {repeats} interleaved "
                          "rounds; x clean = time / the clean sampler's)", file)
        summary = corruption_summary(rows)
        print_table(summary, "Corruption ratios (corrupted / clean time per batch; target "
                             f"<= {TARGETS['corrupted_vs_clean']})", file)
        result["corruptions"], result["corruption_summary"] = rows, summary
    targets = check_targets(result.get("sampler"), result.get("kernels"), result.get("maml"),
                            device, result.get("corruptions"))
    if targets:
        print_table(targets, "Targets", file)
        result["targets"] = targets
    return result


# ---------------------------------------------------------------- command line

def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``bench sampler|kernels|maml|corruptions|all [--ways --shots --queries --batch
    --dim --tasks --repeats --device --severity]`` to an argparse subparsers object;
    ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "bench", help="compare the Rust sampler and kernels with NumPy/torch references, "
                      "MAML meta-training with a learn2learn-style reference, and corrupted "
                      "with clean sampling",
        description="Side-by-side timings in one process, reported as ratios.")
    p.add_argument("what", nargs="?", default="all", choices=WHATS)
    p.add_argument("--ways", type=int, default=None, help="classes per episode / task")
    p.add_argument("--shots", type=int, default=None, help="support items per class")
    p.add_argument("--queries", type=int, default=None, help="query items per class")
    p.add_argument("--batch", type=int, default=None,
                   help=f"episodes per sampler batch (default {DEFAULT_BATCH})")
    p.add_argument("--dim", type=int, default=None, help="embedding dimension (kernels)")
    p.add_argument("--tasks", type=int, default=None,
                   help=f"tasks per kernel call; MAML meta-batch (default {DEFAULT_MAML_TASKS})")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"interleaved rounds (default 7; maml {DEFAULT_MAML_REPEATS})")
    p.add_argument("--min-time", type=float, default=0.1,
                   help="seconds per timed block of calls (default 0.1)")
    p.add_argument("--data-root", default=None,
                   help="folder holding omniglot-npz/ (default $METAROBUST_DATA)")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="skip the memory, allocation and overhead probes")
    p.add_argument("--device", default="cpu", help="MAML device (default cpu; e.g. cuda)")
    p.add_argument("--severity", type=int, default=CORRUPTION_SEVERITY,
                   help=f"corruption severity 1..5 (default {CORRUPTION_SEVERITY})")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    """``metarobust bench``; bad arguments raise ValueError naming them (the command line
    prints it as ``metarobust: error: ...`` and exits with 2)."""
    for name in ("ways", "shots", "batch", "dim", "tasks", "repeats"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ValueError(f"{name}: must be >= 1, got {v}")
    if args.queries is not None and args.queries < 0:
        raise ValueError(f"queries: must be >= 0, got {args.queries}")
    if not 0 < args.min_time < math.inf:
        raise ValueError(f"min_time: must be finite and > 0 (seconds), got {args.min_time}")
    severity = getattr(args, "severity", CORRUPTION_SEVERITY)
    if not 1 <= severity <= 5:
        raise ValueError(f"severity: must be in 1..5, got {severity}")
    device = getattr(args, "device", "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA is not available")
    for k, v in machine_info().items():
        print(f"{k}: {v}")
    run(args.what, ways=args.ways, shots=args.shots, queries=args.queries, batch=args.batch,
        dim=args.dim, tasks=args.tasks, repeats=args.repeats, min_time=args.min_time,
        data_root=args.data_root, diagnostics=not args.no_diagnostics, device=device,
        severity=severity)
    return 0
