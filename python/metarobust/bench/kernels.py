"""Prototype-distance kernel benchmark: the fused Rust op against torch expressions.

The work: mean prototypes + squared Euclidean distances for ``(B, N, K, Q, D)`` = (tasks,
ways, shots, queries per task, embedding dim), float32. Candidates
(:func:`kernel_candidates`):

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
FLOP counts (:func:`kernel_flops`; multiply and add counted separately): forward
``2*B*Q*N*D`` (the distance GEMM) ``+ B*N*K*D`` (prototype sums); forward+backward
``3 * 2*B*Q*N*D + 2 * B*N*K*D`` (backward: the two GEMMs ``g @ p`` and ``g^T @ q``, and
spreading the prototype gradient back to the support items). Element-wise terms (norms,
clamps) are not counted.

Diagnostic: :func:`kernel_overhead_probe`, the Python/autograd share of the fused op.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .. import _core, ops
from .timing import DEFAULT_MIN_TIME, DEFAULT_REPEATS, _single_thread, _stats, measure

DEFAULT_KERNEL_SHAPES: tuple[tuple[int, int, int, int, int], ...] = (
    (32, 5, 5, 75, 64),
    (4, 20, 5, 300, 1600),
    (1, 64, 5, 320, 640),
)
SMALL_KERNEL_SHAPE = (32, 5, 5, 75, 64)
MODES = ("fwd", "fwd+bwd")
KERNEL_CANDIDATES = ("rust", "torch_expand", "torch_gemm", "torch_cdist")

Shape = tuple[int, int, int, int, int]


def _shape_str(shape: Sequence[int]) -> str:
    """The label of a shape in the tables, e.g. ``(32,5,5,75,64)``."""
    return "(" + ",".join(str(v) for v in shape) + ")"


def kernel_flops(shape: Shape, mode: str) -> int:
    """FLOPs counted for one call (see the module docstring)."""
    b, n, k, q, d = shape
    gemm, protos = 2 * b * q * n * d, b * n * k * d
    return gemm + protos if mode == "fwd" else 3 * gemm + 2 * protos


def _torch_candidate(dist: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     q: torch.Tensor, s: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """A torch reference: mean prototypes, then ``dist`` to the queries."""
    return dist(q, _torch_protos(s, n, k))


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


def kernel_inputs(shape: Shape, grad: bool, seed: int = 0):
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
    names: tuple[str, ...] = KERNEL_CANDIDATES
    if torch.get_num_threads() > 1:
        names += tuple(f"{n}/1t" for n in KERNEL_CANDIDATES if n != "rust")
    return names


def kernel_candidates(shape: Shape, mode: str, seed: int = 0,
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
            out[name] = make(functools.partial(ops.prototype_distances, s, lab, q, n))
        elif base in _TORCH_DIST and suffix in ("", "1t"):
            fn = make(functools.partial(_torch_candidate, _TORCH_DIST[base], q, s, n, k))
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


def bench_kernels(
    shapes: Sequence[Shape] = DEFAULT_KERNEL_SHAPES,
    modes: Sequence[str] = MODES,
    repeats: int = DEFAULT_REPEATS,
    min_time: float = DEFAULT_MIN_TIME,
    names: Sequence[str] | None = None,
) -> list[dict]:
    """One row per (shape, mode, candidate): ms/call, GFLOP/s, speedup of Rust over it.
    The forward results of every candidate are checked against ``rust`` first."""
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


# ---------------------------------------------------------------- diagnostic

_OVERHEADS = (  # (row label, public call, bare Rust calls doing the same work)
    ("fwd wrapper overhead (ops fwd - _core fwd)",
     "ops.prototype_distances fwd", "_core.proto_distances"),
    ("fwd+bwd wrapper overhead (ops - _core, autograd incl.)",
     "ops fwd+bwd (autograd)", "_core fwd then backward"),
)


def _overhead_candidates(shape: Shape) -> tuple[dict[str, Callable], dict[str, int]]:
    """The calls of :func:`kernel_overhead_probe` and the FLOPs each one does."""
    n = shape[1]
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
    return cands, flops


def kernel_overhead_probe(shape: Shape = SMALL_KERNEL_SHAPE, repeats: int = DEFAULT_REPEATS,
                          min_time: float = DEFAULT_MIN_TIME) -> list[dict]:
    """Diagnostic: where the time of the fused Rust op goes at one shape: the public op
    (argument checks, tensor <-> NumPy views, autograd Function and engine) against the
    bare ``_core.proto_distances`` / ``_core.proto_distances_backward`` calls on NumPy
    arrays; the last rows are the differences of best times (the wrapper overhead)."""
    cands, flops = _overhead_candidates(shape)
    times = measure(cands, repeats, min_time)
    best = {name: min(t) for name, t in times.items()}
    rows = []
    for name, samples in times.items():
        t_best, t_med = _stats(samples)
        rows.append({"shape (B,N,K,Q,D)": _shape_str(shape), "call": name,
                     "us/call": t_best * 1e6, "median us": t_med * 1e6,
                     "GFLOP/s": flops[name] / t_best / 1e9})
    for label, a, c in _OVERHEADS:
        rows.append({"shape (B,N,K,Q,D)": _shape_str(shape), "call": label,
                     "us/call": (best[a] - best[c]) * 1e6, "median us": float("nan"),
                     "GFLOP/s": float("nan")})
    return rows
