"""Differentiable prototype and distance operations.

CPU tensors run the Rust kernels (through torch autograd Functions); other devices run the
equivalent torch code (the ``*_torch`` functions), with the same semantics. Shapes:
``emb (S, D)`` or ``(B, S, D)`` with ``labels (S,)`` or ``(B, S)`` in ``0..ways-1``;
``x (Q, D)`` or ``(B, Q, D)``; ``y (N, D)`` or ``(B, N, D)``.

>>> import torch, metarobust as mr
>>> emb = torch.randn(10, 64); labels = torch.arange(5).repeat(2)
>>> protos = mr.ops.prototypes(emb, labels, ways=5)            # (5, 64)
>>> d = mr.ops.pairwise_distances(torch.randn(75, 64), protos)  # (75, 5)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import _core
from ._checks import check_choice, check_int, check_real

METHODS = ("mean", "median", "trimmed_mean", "geometric_median", "filtered_mean")
METRICS = ("sqeuclidean", "cosine")
COSINE_EPS = 1e-8

__all__ = [
    "DTYPES", "METHODS", "METRICS", "prototypes", "pairwise_distances", "prototype_distances",
    "prototypes_torch", "pairwise_distances_torch",
]


# ---------------------------------------------------------------- argument checks

#: Dtypes the torch code accepts; the Rust kernels take float32 and float64 (CPU).
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Half-precision inputs are computed in float32 and the results rounded back: float16's
# squared norms overflow past 256 and its reciprocals of small distances overflow, and
# both formats lose the differences between nearby distances to cancellation.
_HALF = (torch.float16, torch.bfloat16)


def _batched(t: torch.Tensor, name: str, feature: bool = True) -> tuple[torch.Tensor, bool]:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    want = (2, 3) if feature else (1, 2)
    if t.dim() not in want:
        raise ValueError(f"{name}: expected {want[0]} or {want[1]} dimensions, got shape "
                         f"{tuple(t.shape)}")
    if feature and t.dtype not in DTYPES:
        raise TypeError(f"{name}: expected a floating-point tensor (float16, bfloat16, float32 "
                        f"or float64), got {t.dtype}")
    single = t.dim() == want[0]
    return (t.unsqueeze(0) if single else t), single


def _check_nonempty(t: torch.Tensor, name: str) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name}: empty shape {tuple(t.shape)} (needs at least one item and "
                         "one feature, and a task where batched)")


def _check_labels(labels: torch.Tensor, emb: torch.Tensor, ways: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor, got {labels.dtype}")
    if labels.dim() == 1 and emb.shape[0] == 1:
        labels = labels.unsqueeze(0)
    if labels.shape != emb.shape[:2]:
        raise ValueError(f"labels: shape {tuple(labels.shape)} does not match the embeddings' "
                         f"(tasks, items) = {tuple(emb.shape[:2])}")
    if labels.device != emb.device:
        raise ValueError(f"labels: on {labels.device}, embeddings on {emb.device}")
    return labels.to(torch.int64)


def _check_ways(ways: int, support: int) -> int:
    """``ways`` as an int in ``1..support``: every class needs one of the ``support`` items
    (checked before anything of size ``ways`` is allocated)."""
    ways = check_int(ways, "ways", 1)
    if ways > support:
        raise ValueError(f"ways: {ways} classes, but the {support} support items of a task "
                         "cannot cover them (every class needs an item)")
    return ways


def _rust_ok(*ts: torch.Tensor) -> bool:
    """CPU float32/float64 tensors go to the Rust kernels."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in ts)


def _np(t: torch.Tensor):
    return t.detach().contiguous().numpy()


def _check_finite_torch(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: holds NaN or inf")


def _check_classes_present(labels: torch.Tensor, ways: int) -> torch.Tensor:
    if bool(((labels < 0) | (labels >= ways)).any()):
        bad = labels[(labels < 0) | (labels >= ways)][0].item()
        raise ValueError(f"labels: values must be in 0..{ways} (ways), got {bad}")
    counts = F.one_hot(labels, ways).sum(1)
    if bool((counts == 0).any()):
        task, cls = (counts == 0).nonzero()[0].tolist()
        raise ValueError(f"labels: task {task} has no support item of class {cls} "
                         f"(every class 0..{ways} needs one)")
    return counts


# ---------------------------------------------------------------- torch reference code

def _grouped(emb: torch.Tensor, labels: torch.Tensor, ways: int, counts: torch.Tensor):
    """Items regrouped as (B, ways, K, D) padded with NaN, K the largest class count."""
    b, s, d = emb.shape
    kmax = int(counts.max())
    order = torch.argsort(labels, dim=1, stable=True)
    sorted_labels = labels.gather(1, order)
    starts = torch.cumsum(counts, 1) - counts
    rank = torch.arange(s, device=emb.device).expand(b, s) - starts.gather(1, sorted_labels)
    padded = emb.new_full((b, ways, kmax, d), float("nan"))
    rows = torch.arange(b, device=emb.device)[:, None].expand(b, s)
    padded = padded.index_put((rows, sorted_labels, rank),
                              emb.gather(1, order[..., None].expand(b, s, d)))
    return padded


def _weiszfeld(padded: torch.Tensor, mask: torch.Tensor, tol: float, max_iter: int):
    """Geometric median of each group (no autograd), Vardi-Zhang at coincident points."""
    with torch.no_grad():
        x = torch.where(mask[..., None], padded, 0.0)
        n = mask.sum(-1, keepdim=True).to(x.dtype)
        m = x.sum(2) / n
        tiny = torch.finfo(x.dtype).tiny  # a float64 constant would round to 0 in float32
        for _ in range(max_iter):
            diff = x - m[:, :, None]
            dist = diff.norm(dim=-1)
            coincide = mask & (dist <= tiny)
            w = torch.where(mask & ~coincide, 1.0 / dist.clamp_min(tiny), 0.0)
            wsum = w.sum(-1, keepdim=True)
            nxt = (w[..., None] * x).sum(2) / wsum.clamp_min(tiny)
            pull = (w[..., None] * diff).sum(2).norm(dim=-1, keepdim=True)
            eta = coincide.sum(-1, keepdim=True).to(x.dtype)
            t = torch.where(pull > 0, (eta / pull.clamp_min(tiny)).clamp(max=1.0), 1.0)
            t = torch.where(eta > 0, t, 0.0)
            nxt = (1 - t) * nxt + t * m
            nxt = torch.where(wsum > 0, nxt, m)
            step = (nxt - m).norm(dim=-1).max()
            m = nxt
            if float(step) <= tol:
                break
    return m


class _GeometricMedianGrad(torch.autograd.Function):
    """Attaches the implicit-function gradient of the geometric median to a solved estimate.

    At the fixed point sum_i (x_i - m) / r_i = 0, so dm/dx_j = H^-1 (I - u_j u_j^T) / r_j with
    H = sum_i (I - u_i u_i^T) / r_i = a I - U^T diag(w) U. H^-1 g is solved through the
    push-through identity with a K x K system instead of a D x D one.
    """

    @staticmethod
    def forward(ctx, padded, mask, m):
        ctx.save_for_backward(padded, mask, m)
        return m.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        padded, mask, m = ctx.saved_tensors
        x = torch.where(mask[..., None], padded, 0.0)
        diff = x - m[:, :, None]
        tiny = torch.finfo(x.dtype).eps ** 2
        r = diff.norm(dim=-1).clamp_min(tiny)
        w = torch.where(mask, 1.0 / r, 0.0)  # (B, W, K)
        u = diff / r[..., None]
        a = w.sum(-1)  # (B, W)
        ug = (u @ g[..., None]).squeeze(-1)  # (B, W, K)
        k = u.shape[2]
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        system = a[..., None, None] * eye - w[..., None] * (u @ u.transpose(-1, -2))
        # Two-point groups are singular; they are replaced below, so keep the solve defined.
        system = torch.where((mask.sum(-1) <= 2)[..., None, None], eye, system)
        z = torch.linalg.solve(system, (w * ug)[..., None]).squeeze(-1)
        v = (g + (u.transpose(-1, -2) @ z[..., None]).squeeze(-1)) / a[..., None]
        uv = (u @ v[..., None]).squeeze(-1)
        grad = w[..., None] * (v[:, :, None] - u * uv[..., None])
        # With one or two points every estimate on the segment is optimal and Weiszfeld stays
        # at the mean it starts from: its gradient is the mean's.
        n = mask.sum(-1, keepdim=True)
        small = (n <= 2)[..., None]
        mean_grad = g[:, :, None, :] / n[..., None].to(g.dtype)
        grad = torch.where(small, mean_grad, grad)
        # An estimate sitting on data points (Vardi-Zhang case) stays there under small moves
        # of the others: the gradient goes to those points alone.
        dist = diff.norm(dim=-1)
        scale = torch.where(mask, dist, 0.0).amax(-1, keepdim=True)
        on = mask & (dist <= 1e-6 * scale)
        n_on = on.sum(-1, keepdim=True)
        share = g[:, :, None, :] / n_on.clamp_min(1)[..., None]
        point_grad = torch.where(on[..., None], share, 0.0)
        grad = torch.where(((n_on > 0) & ~(n <= 2))[..., None], point_grad, grad)
        return torch.where(mask[..., None], grad, 0.0), None, None


def _robust_torch(emb, labels, ways, counts, method, trim, tol, max_iter, solved=None):
    padded = _grouped(emb, labels, ways, counts)
    mask = ~torch.isnan(padded[..., 0])
    if method == "geometric_median":
        m = solved if solved is not None else _weiszfeld(padded, mask, tol, max_iter)
        return _GeometricMedianGrad.apply(padded, mask, m.detach())
    vals, _ = torch.sort(torch.where(mask[..., None], padded, float("inf")), dim=2)
    n = counts[..., None, None].expand(-1, -1, 1, emb.shape[-1])  # (B, W, 1, D)
    if method == "median":
        lo = vals.gather(2, (n - 1) // 2)
        hi = vals.gather(2, n // 2)
        return (0.5 * (lo + hi)).squeeze(2)
    cut = torch.floor(trim * counts.to(torch.float64)).to(torch.int64)[..., None, None]
    pos = torch.arange(vals.shape[2], device=emb.device)[None, None, :, None]
    keep = (pos >= cut) & (pos < n - cut)
    kept = torch.where(keep, vals, 0.0).sum(2)
    return kept / (n - 2 * cut).squeeze(2).to(emb.dtype)


def prototypes_torch(emb, labels, ways, method="mean", *, trim=0.2, tol=1e-6, max_iter=100,
                     metric="sqeuclidean", rounds=2):
    """Torch implementation of :func:`prototypes` (used on CUDA; a reference on CPU)."""
    emb3, single, lab, ways, method, opt = _prototype_args(
        emb, labels, ways, method, trim, tol, max_iter, metric, rounds)
    _check_finite_torch(emb3, "emb")
    counts = _check_classes_present(lab, ways)
    work = emb3.float() if emb3.dtype in _HALF else emb3
    if method == "mean":
        onehot = F.one_hot(lab, ways).to(work.dtype)
        out = onehot.transpose(1, 2) @ work / counts[..., None].to(work.dtype)
    else:
        robust = "geometric_median" if method == "filtered_mean" else method
        out = _robust_torch(work, lab, ways, counts, robust, opt.trim, opt.tol, opt.max_iter)
        if method == "filtered_mean":
            out = _filtered_mean(work, lab, ways, out, opt.metric, opt.rounds,
                                 pairwise_distances_torch)
    out = out.to(emb3.dtype)
    return out[0] if single else out


def _filtered_mean(emb, labels, ways, centre, metric, rounds, distances):
    """``rounds`` passes of: the mean of each class's items nearest their own class's
    prototype (the keep/drop choice is not differentiated; the mean is)."""
    onehot = F.one_hot(labels, ways).to(emb.dtype)  # (B, S, W)
    protos = centre
    last = None
    for _ in range(rounds):
        with torch.no_grad():
            keep = distances(emb, protos, metric).argmin(-1) == labels  # (B, S)
        if last is not None and torch.equal(keep, last):
            break  # the same items give the same means: the rounds left change nothing
        last = keep
        weights = onehot * keep[..., None].to(emb.dtype)
        kept = weights.sum(1)[..., None]  # (B, W, 1)
        mean = weights.transpose(1, 2) @ emb / kept.clamp_min(1)
        protos = torch.where(kept > 0, mean, centre)
    return protos


class _Options(NamedTuple):
    trim: float
    tol: float
    max_iter: int
    metric: str
    rounds: int


_MAX_ITER = 2**63 - 1  # the Rust kernels' bound (i64)


def _check_options(trim, tol, max_iter, metric, rounds) -> _Options:
    # Checked whatever the method, so that a bad value is not silently unused.
    trim = check_real(trim, "trim", 0.0, 0.5, high_open=True)
    metric = check_choice(metric, "metric", METRICS)
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)):
        raise TypeError(f"rounds: must be an int >= 1, got {rounds!r} ({type(rounds).__name__})")
    if rounds < 1:
        raise ValueError(f"rounds: must be an int >= 1, got {rounds}")
    tol = check_real(tol, "tol", 0.0, low_open=True)
    max_iter = check_int(max_iter, "max_iter", 1)
    if max_iter > _MAX_ITER:
        raise ValueError(f"max_iter: must be <= {_MAX_ITER}, got {max_iter}")
    return _Options(trim, tol, max_iter, metric, int(rounds))


def _prototype_args(emb, labels, ways, method, trim, tol, max_iter, metric, rounds):
    """The arguments of :func:`prototypes`, checked: ``(emb (B, S, D), single, labels
    (B, S) int64, ways, method, options)``."""
    emb3, single = _batched(emb, "emb")
    method = check_choice(method, "method", METHODS)
    opt = _check_options(trim, tol, max_iter, metric, rounds)
    _check_nonempty(emb, "emb")
    ways = _check_ways(ways, emb3.shape[1])
    lab = _check_labels(labels, emb3, ways)
    return emb3, single, lab, ways, method, opt


def _distances_torch(x, y, metric):
    if metric == "sqeuclidean":
        xx = (x * x).sum(-1, keepdim=True)
        yy = (y * y).sum(-1)[:, None, :]
        return (xx + yy - 2 * x @ y.transpose(1, 2)).clamp_min(0)
    xh = F.normalize(x, dim=-1, eps=COSINE_EPS)
    yh = F.normalize(y, dim=-1, eps=COSINE_EPS)
    return 1 - xh @ yh.transpose(1, 2)


def _xy(x, y, metric):
    x3, xs = _batched(x, "x")
    y3, ys = _batched(y, "y")
    check_choice(metric, "metric", METRICS)
    if xs != ys:
        raise ValueError(f"x, y: both single (2-D) or both batched (3-D), got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if x3.shape[0] != y3.shape[0] or x3.shape[2] != y3.shape[2]:
        raise ValueError(f"x, y: shapes {tuple(x.shape)} and {tuple(y.shape)} must agree in "
                         "batch and feature dimensions")
    if x3.dtype != y3.dtype or x3.device != y3.device:
        raise TypeError(f"x, y: dtype/device differ ({x3.dtype} on {x3.device} vs {y3.dtype} "
                        f"on {y3.device})")
    for t, n in ((x3, "x"), (y3, "y")):
        if 0 in t.shape:
            raise ValueError(f"{n}: empty shape {tuple(t.shape)}")
    return x3, y3, xs


def pairwise_distances_torch(x, y, metric="sqeuclidean"):
    """Torch implementation of :func:`pairwise_distances`."""
    x3, y3, single = _xy(x, y, metric)
    _check_finite_torch(x3, "x")
    _check_finite_torch(y3, "y")
    if x3.dtype in _HALF:
        out = _distances_torch(x3.float(), y3.float(), metric).to(x3.dtype)
    else:
        out = _distances_torch(x3, y3, metric)
    return out[0] if single else out


# ---------------------------------------------------------------- Rust-backed Functions

class _MeanPrototypes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, emb, labels, ways):
        ctx.save_for_backward(labels)
        ctx.support = emb.shape[1]
        return torch.from_numpy(_core.prototypes(_np(emb), _np(labels), ways, "mean"))

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (labels,) = ctx.saved_tensors
        grad = _core.mean_prototypes_backward(_np(g), _np(labels), ctx.support)
        return torch.from_numpy(grad), None, None


class _RobustPrototypes(torch.autograd.Function):
    """Rust forward; backward through the torch reference at the same point."""

    @staticmethod
    def forward(ctx, emb, labels, ways, method, trim, tol, max_iter):
        out = torch.from_numpy(
            _core.prototypes(_np(emb), _np(labels), ways, method, trim, tol, max_iter))
        ctx.save_for_backward(emb, labels, out)
        ctx.args = (ways, method, trim, tol, max_iter)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        emb, labels, out = ctx.saved_tensors
        ways, method, trim, tol, max_iter = ctx.args
        with torch.enable_grad():
            e = emb.detach().requires_grad_(True)
            counts = F.one_hot(labels, ways).sum(1)
            ref = _robust_torch(e, labels, ways, counts, method, trim, tol, max_iter,
                                solved=out)
            (grad,) = torch.autograd.grad(ref, e, g)
        return grad, None, None, None, None, None, None


class _PairwiseDistances(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, metric):
        ctx.save_for_backward(x, y)
        ctx.metric = metric
        return torch.from_numpy(_core.pairwise_distances(_np(x), _np(y), metric))

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        gx, gy = _core.pairwise_distances_backward(_np(x), _np(y), _np(g), ctx.metric)
        return torch.from_numpy(gx), torch.from_numpy(gy), None


class _ProtoDistances(torch.autograd.Function):
    @staticmethod
    def forward(ctx, support, labels, query, ways, metric):
        dist, protos = _core.proto_distances(_np(support), _np(labels), _np(query), ways, metric)
        ctx.save_for_backward(support, labels, query, torch.from_numpy(protos))
        ctx.args = (ways, metric)
        return torch.from_numpy(dist)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        support, labels, query, protos = ctx.saved_tensors
        ways, metric = ctx.args
        gs, gq = _core.proto_distances_backward(
            _np(support), _np(labels), _np(query), protos.numpy(), _np(g), ways, metric)
        return torch.from_numpy(gs), None, torch.from_numpy(gq), None, None


# ---------------------------------------------------------------- public API

def prototypes(emb, labels, ways, method="mean", *, trim=0.2, tol=1e-6, max_iter=100,
               metric="sqeuclidean", rounds=2):
    """Class prototypes ``(ways, D)`` or ``(B, ways, D)`` of support embeddings.

    method: "mean"; "median" (coordinate-wise, averaging the two middle values like NumPy);
    "trimmed_mean" (drops ``floor(trim * n)`` values at each end per coordinate, like
    scipy.stats.trim_mean); "geometric_median" (Weiszfeld to ``tol``, at most ``max_iter``
    steps, differentiated through its fixed point); "filtered_mean" (starts from the
    geometric medians, then ``rounds`` times takes the mean of each class's items whose
    nearest prototype under ``metric`` is their own class's: an item carrying another
    class's label, the usual support-label noise, lies nearer that class and drops out; a
    class left with no such item keeps its geometric median). Every class 0..ways-1 needs
    an item. ``emb`` is float16, bfloat16, float32 or float64 (half precision is computed
    in float32 and rounded back).
    """
    emb3, single, lab, ways, method, opt = _prototype_args(
        emb, labels, ways, method, trim, tol, max_iter, metric, rounds)
    if not _rust_ok(emb3):
        return prototypes_torch(emb, labels, ways, method, **opt._asdict())
    if method == "filtered_mean":
        centre = _RobustPrototypes.apply(emb3, lab, ways, "geometric_median", opt.trim,
                                         opt.tol, opt.max_iter)
        out = _filtered_mean(emb3, lab, ways, centre, opt.metric, opt.rounds,
                             pairwise_distances)
        return out[0] if single else out
    if method == "mean":
        out = _MeanPrototypes.apply(emb3, lab, ways)
    else:
        out = _RobustPrototypes.apply(emb3, lab, ways, method, opt.trim, opt.tol, opt.max_iter)
    return out[0] if single else out


def pairwise_distances(x, y, metric="sqeuclidean"):
    """Distances ``(Q, N)`` or ``(B, Q, N)``: "sqeuclidean" or "cosine" (``1 - cos``).
    ``x`` and ``y`` share one dtype: float16, bfloat16, float32 or float64."""
    x3, y3, single = _xy(x, y, metric)
    out = (_PairwiseDistances.apply(x3, y3, metric) if _rust_ok(x3, y3)
           else pairwise_distances_torch(x3, y3, metric))
    return out[0] if single else out


def prototype_distances(support, labels, query, ways, metric="sqeuclidean"):
    """Fused mean prototypes + distances: ``(Q, ways)`` or ``(B, Q, ways)``.

    Equal to ``pairwise_distances(query, prototypes(support, labels, ways), metric)`` in one
    Rust call forward and one backward: the ProtoNet hot path. Logits are ``-distances``.
    """
    s3, single = _batched(support, "support")
    q3, qsingle = _batched(query, "query")
    metric = check_choice(metric, "metric", METRICS)
    if single != qsingle:
        raise ValueError(f"support, query: both single (2-D) or both batched (3-D), got shapes "
                         f"{tuple(support.shape)} and {tuple(query.shape)}")
    if q3.shape[0] != s3.shape[0] or q3.shape[2] != s3.shape[2]:
        raise ValueError(f"query: shape {tuple(query.shape)} must agree with support's "
                         f"{tuple(support.shape)} in batch and feature dimensions")
    if q3.dtype != s3.dtype or q3.device != s3.device:
        raise TypeError(f"query: {q3.dtype} on {q3.device}, support {s3.dtype} on "
                        f"{s3.device}; they must match")
    _check_nonempty(support, "support")
    _check_nonempty(query, "query")
    ways = _check_ways(ways, s3.shape[1])
    lab = _check_labels(labels, s3, ways)
    if _rust_ok(s3, q3):
        out = _ProtoDistances.apply(s3, lab, q3, ways, metric)
    else:
        _check_finite_torch(s3, "support")
        _check_finite_torch(q3, "query")
        out = pairwise_distances_torch(q3, prototypes_torch(s3, lab, ways), metric)
    return out[0] if single else out
