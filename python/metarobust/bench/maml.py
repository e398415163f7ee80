"""MAML meta-training benchmark: tasks/s and peak memory of metarobust's MAML paths against
a learn2learn-style reference (:mod:`.maml_reference`).

One meta-training step is ``zero_grad`` then the meta-gradient of a whole meta-batch (no
optimiser step), in Finn et al.'s Omniglot setting: ``conv4_finn`` at 28x28, 5-way 1-shot
15-query, one inner step with ``inner_lr`` 0.4, meta-batch ``tasks`` (32), second and first
order. Candidates (:func:`maml_candidates`):

- ``loop`` / ``threads`` / ``vmap``: :class:`metarobust.learners.MAML` with that ``path``
  (``meta_backward``); ``auto`` is whichever it picks on the device for the Conv-4 (threads
  on a CPU with several torch threads, else the loop; vmap on CUDA), shown as ``(auto)``;
- ``reference``: :class:`ReferenceMAML`, MAML as learn2learn runs it;
- ``plain``: the same loop without the module cloning (``torch.func.functional_call``);
- ``unfused``: metarobust's auto path with ``fuse_first_block=False``: the Conv-4's first
  block through torch rather than the fused Rust kernels of :mod:`metarobust.models.fused`
  (CPU only; what the fusion gains, side by side).

Every candidate starts from the same initial weights and the same batch, and before any
timing :func:`check_maml_agree` verifies that each one's meta-gradient equals the
reference's (``allclose``) on the first 2 tasks of that batch, in float64 (float32 would
need a loose tolerance, see there; the fused first block runs in float32 only, and the test
suite checks it against float64 references). A step's time is the best of ``repeats``
interleaved rounds of one step each (after one warm-up step), median beside.

Peak memory is measured apart, one fresh subprocess per candidate (:func:`maml_peak_memory`),
so that no candidate inherits another's heap: one warm-up step, then ``gc.collect()`` +
``malloc_trim``, the resident-set peak reset (``/proc/self/clear_refs``), one step, and the
reported figure is ``VmHWM`` (peak resident set) minus ``VmRSS`` just before the step: the
extra memory the step itself touches. On CUDA it is ``torch.cuda.max_memory_allocated()``
minus ``memory_allocated()`` before the step, in this process (the allocator's counter is
exact).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..episodes import Episode, EpisodeSampler
from .maml_reference import (
    MAML_INNER_LR,
    MAML_INNER_STEPS,
    MAML_ORDERS,
    ReferenceMAML,
    _RefClassifier,
)
from .memory import _malloc_trim, _proc_status_kib, _reset_peak_rss
from .sampler import _EPISODE_FIELDS, omniglot_like
from .timing import _stats, measure_steps

MAML_CANDIDATES = ("loop", "threads", "vmap", "reference", "plain", "unfused")
DEFAULT_MAML_TASKS = 32
DEFAULT_MAML_REPEATS = 3
MAML_SETTING = (5, 1, 15)  # ways, shots, queries per class
MAML_MODEL = "conv4_finn"
_METAROBUST_PATHS = ("loop", "threads", "vmap", "auto", "unfused")


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
    """metarobust's MAML on the benchmark's network, with the batch's device and dtype."""
    from ..learners import MAML
    from ..models import build_model

    channels, size = _image_shape(batch)
    torch.manual_seed(seed)
    body = build_model(MAML_MODEL, in_channels=channels, image_size=size)
    learner = MAML(body, inner_lr=MAML_INNER_LR, inner_steps=MAML_INNER_STEPS, order=order,
                   ways=ways, path=path, fuse_first_block=fuse)
    return learner.to(batch.support_x.device, batch.support_x.dtype).train()


def _reference_net(batch: Episode, ways: int, seed: int) -> nn.Module:
    """The reference's own network: built like the learners' (same seed, so the same initial
    weights), BatchNorm switched to batch statistics only, in training mode."""
    from ..models import build_model

    channels, size = _image_shape(batch)
    torch.manual_seed(seed)
    body = build_model(MAML_MODEL, in_channels=channels, image_size=size)
    # every metarobust backbone has out_features; torch types Module attributes as modules
    head = nn.Linear(int(body.out_features), ways)  # type: ignore[arg-type]
    for m in body.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return _RefClassifier(body, head).to(batch.support_x.device, batch.support_x.dtype).train()


def _maml_step(batch: Episode, name: str, order: str, ways: int,
               seed: int) -> Callable[[], nn.Module]:
    """One candidate's meta-training step (see :func:`maml_candidates`)."""
    if name in _METAROBUST_PATHS:
        model = (_maml_learner(batch, order, "auto", ways, seed, fuse=False)
                 if name == "unfused" else _maml_learner(batch, order, name, ways, seed))
        zero_grad = model.zero_grad
    elif name in ("reference", "plain"):
        model = ReferenceMAML(_reference_net(batch, ways, seed), order=order,
                              style="learn2learn" if name == "reference" else "functional")
        zero_grad = model.net.zero_grad
    else:
        raise ValueError(f"maml candidate: expected loop, threads, vmap, auto, "
                         f"unfused, reference or plain, got {name!r}")
    sync = batch.support_x.device.type == "cuda"

    def step() -> nn.Module:
        zero_grad(set_to_none=True)
        model.meta_backward(batch, ways)
        if sync:
            torch.cuda.synchronize()
        return model.net

    return step


def maml_candidates(batch: Episode, order: str, names: Iterable[str] = MAML_CANDIDATES,
                    ways: int | None = None, seed: int = 0) -> dict[str, Callable]:
    """Zero-argument callables, one meta-training step each (``zero_grad`` + meta-gradient
    of ``batch``), returning the network whose parameters hold the gradient (names
    ``body.*``/``head.*`` for every candidate). Every candidate has its own copy of the same
    initial weights (built in float32, then cast to the batch's dtype). names: ``loop``,
    ``threads``, ``vmap``, ``auto``, ``unfused`` (metarobust's MAML with that path),
    ``reference``, ``plain`` (:class:`ReferenceMAML`)."""
    if order not in MAML_ORDERS:
        raise ValueError(f"order: expected one of {MAML_ORDERS}, got {order!r}")
    ways = int(batch.support_y.max()) + 1 if ways is None else ways
    return {name: _maml_step(batch, name, order, ways, seed) for name in names}


def maml_auto_path(device: str | torch.device = "cpu", tasks: int = DEFAULT_MAML_TASKS) -> str:
    """The path ``MAML(path="auto")`` takes for the benchmark's Conv-4 on ``device``, with
    a meta-batch of ``tasks`` and torch's current thread count."""
    from ..learners import MAML
    from ..models import build_model

    learner = MAML(build_model(MAML_MODEL, 1, 28, filters=1), ways=2, path="auto")
    x = torch.empty(0, device=device)
    if learner._use_vmap(x):
        return "vmap"
    return "threads" if learner._task_threads(x, tasks) else "loop"


# ---------------------------------------------------------------- agreement

def _grad_error(name: str, order: str, got: dict[str, nn.Parameter],
                ref: dict[str, torch.Tensor], rtol: float) -> float:
    """The largest ``max|g - g_ref| / s`` over the parameters (see
    :func:`check_maml_agree`); AssertionError where one is not ``allclose``."""
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
    return worst


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
    ``rtol`` 1e-6) checks tightly that the candidates compute the same function. float32
    gets ``rtol`` 5e-2: the second derivative through native ``F.batch_norm`` in float32
    (loop and reference alike) is itself imprecise, and the vmap path's elementary-op
    BatchNorm rounds differently, so the two disagree by far more than rounding suggests."""
    # Measured on random-pixel images: in float64 every path agrees with the reference to
    # about 1e-12; in float32 the loop path to about 1e-7 (the very same operations), the
    # vmap path to 1-2e-2 (native float32 BatchNorm's second derivative is about 1% off
    # the float64 value, the vmap path's within 1e-4).
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
    return {name: _grad_error(name, order, dict(cands[name]().named_parameters()), ref, rtol)
            for name in names if name != "reference"}


# ---------------------------------------------------------------- peak memory

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
        peak_kib = _proc_status_kib("VmHWM")
        if peak_kib is not None:
            return (peak_kib - base_kib) * 1024, "VmHWM - VmRSS"
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
        code = ("import sys; from metarobust.bench.maml import _maml_memory_child; "
                "_maml_memory_child(sys.argv[1])")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"maml_peak_memory({candidate}, {order}): the subprocess failed:\n"
                           f"{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return float("nan") if res["peak_bytes"] < 0 else res["peak_bytes"] / (1 << 20)


# ---------------------------------------------------------------- benchmark

def _maml_label(name: str, auto: str) -> str:
    if name == "reference":
        return "reference (learn2learn-style)"
    if name == "plain":
        return "plain loop (functional_call)"
    if name == "unfused":
        return f"metarobust {auto}, torch first block"
    return f"metarobust {name}" + (" (auto)" if name == auto else "")


def _maml_errors(batch: Episode, orders: Sequence[str], names: Sequence[str], ways: int,
                 seed: int) -> dict[tuple[str, str], float]:
    """:func:`check_maml_agree` per order: ``{(order, candidate): error}``."""
    err: dict[tuple[str, str], float] = {}
    for order in orders:
        for name, e in check_maml_agree(batch, order, names, ways=ways, seed=seed).items():
            err[order, name] = e
        err[order, "reference"] = 0.0
    return err


def _maml_peaks(batch: Episode, orders: Sequence[str], names: Sequence[str], ways: int,
                seed: int) -> dict[tuple[str, str], float]:
    """:func:`maml_peak_memory` per (order, candidate), the batch saved once for all."""
    peak: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batch.pt")
        _save_batch(batch, path)
        for order in orders:
            for name in names:
                peak[order, name] = maml_peak_memory(batch, order, name, ways, seed,
                                                     batch_path=path)
    return peak


def _maml_rows(times: dict[str, list[float]], orders: Sequence[str], names: Sequence[str],
               tasks: int, auto: str, err: dict[tuple[str, str], float],
               peak: dict[tuple[str, str], float]) -> list[dict]:
    """The table of :func:`bench_maml` from the timings, errors and peaks."""
    rows = []
    for order in orders:
        ref_best = min(times[f"{order}/reference"]) if "reference" in names else float("nan")
        for name in names:
            t_best, t_med = _stats(times[f"{order}/{name}"])
            rows.append({
                "order": order, "tasks": tasks, "candidate": _maml_label(name, auto),
                "s/step": t_best, "median s": t_med, "tasks/s": tasks / t_best,
                "median tasks/s": tasks / t_med,
                "peak MiB": peak.get((order, name), float("nan")),
                "vs reference": ref_best / t_best,
                "grad err": f"{err[order, name]:.1e}" if (order, name) in err else "-",
            })
    return rows


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
    memory: peak memory per candidate, each in its own subprocess, before the timings."""
    if batch is None:
        batch = maml_batch(tasks, ways, shots, queries, data_root=data_root, device=device)
    b = batch.support_x.shape[0]
    ways = int(batch.support_y.max()) + 1
    auto = maml_auto_path(batch.support_x.device, b)
    if batch.support_x.device.type != "cpu":  # the fused block is CPU-only
        names = [n for n in names if n != "unfused"]
    err = _maml_errors(batch, orders, names, ways, seed) if check else {}
    peak = _maml_peaks(batch, orders, names, ways, seed) if memory else {}
    cands: dict[str, Callable[[], Any]] = {}
    for order in orders:
        for name, fn in maml_candidates(batch, order, names, ways, seed).items():
            cands[f"{order}/{name}"] = fn
    times = measure_steps(cands, repeats)
    return _maml_rows(times, orders, names, b, auto, err, peak)


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
