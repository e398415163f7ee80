"""Prototype and distance kernels: NumPy references, torch equivalents, gradcheck, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import metarobust as mr
from metarobust import ops

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


def labels_for(tasks, support, ways, rng):
    """Random labels where every class occurs (any order)."""
    out = []
    for _ in range(tasks):
        lab = np.concatenate([np.arange(ways), rng.integers(0, ways, support - ways)])
        out.append(rng.permutation(lab))
    return np.stack(out).astype(np.int64)


def numpy_prototypes(emb, labels, ways, method, trim=0.2):
    out = np.zeros((emb.shape[0], ways, emb.shape[2]))
    for b in range(emb.shape[0]):
        for c in range(ways):
            rows = emb[b][labels[b] == c].astype(np.float64)
            if method == "mean":
                out[b, c] = rows.mean(0)
            elif method == "median":
                out[b, c] = np.median(rows, axis=0)
            else:
                k = int(trim * len(rows))
                srt = np.sort(rows, axis=0)
                out[b, c] = srt[k:len(rows) - k].mean(0)
    return out


def numpy_distances(x, y, metric):
    x, y = x.astype(np.float64), y.astype(np.float64)
    if metric == "sqeuclidean":
        return ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    nx = np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
    ny = np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-8)
    return 1 - (x / nx) @ np.swapaxes(y / ny, 1, 2)


@settings(max_examples=40, deadline=None)
@given(
    tasks=st.integers(1, 3), ways=st.integers(1, 5), extra=st.integers(0, 6), dim=st.integers(1, 9),
    method=st.sampled_from(["mean", "median", "trimmed_mean"]), seed=st.integers(0, 2**32 - 1),
    trim=st.floats(0, 0.49), dtype=st.sampled_from([np.float32, np.float64]),
)
def test_prototypes_match_numpy(tasks, ways, extra, dim, method, seed, trim, dtype):
    rng = np.random.default_rng(seed)
    support = ways + extra
    emb = rng.normal(size=(tasks, support, dim)).astype(dtype)
    lab = labels_for(tasks, support, ways, rng)
    got = ops.prototypes(torch.from_numpy(emb), torch.from_numpy(lab), ways, method, trim=trim)
    want = numpy_prototypes(emb, lab, ways, method, trim)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    ref = ops.prototypes_torch(torch.from_numpy(emb), torch.from_numpy(lab), ways, method,
                               trim=trim)
    np.testing.assert_allclose(ref.numpy(), want, rtol=tol, atol=tol)


@settings(max_examples=40, deadline=None)
@given(
    tasks=st.integers(1, 3), q=st.integers(1, 40), n=st.integers(1, 30), dim=st.integers(1, 70),
    metric=st.sampled_from(["sqeuclidean", "cosine"]), seed=st.integers(0, 2**32 - 1),
)
def test_distances_match_numpy_and_torch(tasks, q, n, dim, metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(tasks, q, dim))
    y = rng.normal(size=(tasks, n, dim))
    want = numpy_distances(x, y, metric)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-4)):
        xt, yt = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
        got = ops.pairwise_distances(xt, yt, metric)
        np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol * (1 + dim))
        ref = ops.pairwise_distances_torch(xt, yt, metric)
        np.testing.assert_allclose(ref.numpy(), want, rtol=tol, atol=tol * (1 + dim))


@settings(max_examples=20, deadline=None)
@given(x=arrays(np.float32, (2, 7, 5), elements=finite), y=arrays(np.float32, (2, 3, 5),
                                                                    elements=finite))
def test_distances_on_arbitrary_finite_values(x, y):
    for metric in ops.METRICS:
        got = ops.pairwise_distances(torch.from_numpy(x), torch.from_numpy(y), metric).numpy()
        want = numpy_distances(x, y, metric)
        assert np.all(got >= -1e-6 if metric == "sqeuclidean" else True)
        scale = 1 + np.abs(x).max() ** 2 + np.abs(y).max() ** 2
        np.testing.assert_allclose(got, want, atol=2e-5 * scale * 5, rtol=1e-4)


def test_large_gemm_path_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1, 320, 640)), rng.normal(size=(1, 64, 640))
    for metric in ops.METRICS:
        got = ops.pairwise_distances(torch.from_numpy(x), torch.from_numpy(y), metric)
        np.testing.assert_allclose(got.numpy(), numpy_distances(x, y, metric), rtol=1e-9,
                                   atol=1e-8)


def test_geometric_median_resists_outlier_and_matches_torch():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(9, 4))
    pts[0] = 1e4  # a far outlier drags the mean, not the geometric median
    emb = torch.from_numpy(pts)[None]
    lab = torch.zeros(1, 9, dtype=torch.int64)
    gm = ops.prototypes(emb, lab, 1, "geometric_median", tol=1e-12, max_iter=10_000)[0, 0]
    mean = ops.prototypes(emb, lab, 1, "mean")[0, 0]
    assert gm.abs().max() < 2 and mean.abs().max() > 1000
    # Optimality: the sum of unit vectors from the estimate to the points vanishes.
    diff = emb[0] - gm
    assert (diff / diff.norm(dim=1, keepdim=True)).sum(0).norm() < 1e-6
    ref = ops.prototypes_torch(emb, lab, 1, "geometric_median", tol=1e-12, max_iter=10_000)
    torch.testing.assert_close(ref[0, 0], gm, rtol=0, atol=1e-9)


def test_geometric_median_at_a_data_point():
    pts = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 1.0], [-1.0, 4.0]]],
                       dtype=torch.float64)
    lab = torch.zeros(1, 5, dtype=torch.int64)
    for fn in (ops.prototypes, ops.prototypes_torch):
        gm = fn(pts, lab, 1, "geometric_median", tol=1e-12, max_iter=1000)
        assert torch.isfinite(gm).all() and gm.abs().max() < 1e-9


@settings(max_examples=30, deadline=None)
@given(ways=st.integers(2, 5), shots=st.integers(3, 7), dim=st.integers(2, 12),
       seed=st.integers(0, 2**32 - 1), metric=st.sampled_from(ops.METRICS),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_filtered_mean_drops_mislabelled_items(ways, shots, dim, seed, metric, dtype):
    """Support-label noise as in the suite: in each class a minority of items carry this
    class's label but lie in another class's cluster. The filtered mean is the NumPy mean of
    the correctly labelled items alone; the plain mean is dragged away."""
    rng = np.random.default_rng(seed)
    # cluster centres at least 72 degrees apart on a circle of radius 100, randomly rotated:
    # far apart in direction (cosine) and in place (sqeuclidean)
    angle = 2 * np.pi * np.arange(ways) / ways + rng.uniform(0, 2 * np.pi)
    circle = np.zeros((ways, dim))
    circle[:, 0], circle[:, 1] = 100 * np.cos(angle), 100 * np.sin(angle)
    centres = circle @ np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    true = np.repeat(np.arange(ways), shots)
    emb = centres[true] + rng.normal(scale=0.5, size=(ways * shots, dim))
    labels = true.copy()
    wrong = rng.integers(0, (shots - 1) // 2 + 1, size=ways)  # fewer wrong than right
    for c in range(ways):
        for i in range(wrong[c]):
            labels[c * shots + i] = (c + 1 + rng.integers(0, ways - 1)) % ways
    emb_t = torch.from_numpy(emb.astype(dtype))
    lab_t = torch.from_numpy(labels)
    want = np.stack([emb[(labels == c) & (true == c)].mean(0) for c in range(ways)])
    tol = 1e-4 if dtype == np.float32 else 1e-9
    for fn in (ops.prototypes, ops.prototypes_torch):
        got = fn(emb_t, lab_t, ways, "filtered_mean", metric=metric, tol=1e-10,
                 max_iter=1000).numpy()
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 100)
    if wrong.any():
        mean = ops.prototypes(emb_t, lab_t, ways, "mean").numpy()
        assert np.abs(mean - want).max() > 1


def test_filtered_mean_keeps_the_geometric_median_of_a_class_with_no_kept_item():
    # class 0's two items sit on classes 1 and 2: both lie nearer those classes' prototypes
    emb = torch.tensor([[-1.0], [1.0], [-1.1], [-1.0], [-0.9], [0.9], [1.0], [1.1]],
                       dtype=torch.float64)
    lab = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    for fn in (ops.prototypes, ops.prototypes_torch):
        got = fn(emb, lab, 3, "filtered_mean", rounds=3)
        centre = fn(emb, lab, 3, "geometric_median")
        torch.testing.assert_close(got[0], centre[0])
        torch.testing.assert_close(got[1:, 0], torch.tensor([-1.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("method", ops.METHODS)
def test_gradcheck_prototypes(method):
    rng = np.random.default_rng(2)
    emb = torch.from_numpy(rng.normal(size=(2, 11, 3))).requires_grad_(True)
    # classes of 1, 2, 3 and 5 items (one or two points are special for the geometric median)
    lab = torch.tensor([[0, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3], [3, 3, 3, 3, 3, 2, 2, 2, 1, 1, 0]])
    lab = lab[:, torch.randperm(11, generator=torch.Generator().manual_seed(0))]
    fn = lambda e: ops.prototypes(e, lab, 4, method, tol=1e-13, max_iter=10_000)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (emb,), atol=1e-5)


@pytest.mark.parametrize("metric", ops.METRICS)
def test_gradcheck_distances_and_fused(metric):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(2, 5, 4))).requires_grad_(True)
    y = torch.from_numpy(rng.normal(size=(2, 3, 4))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.pairwise_distances(a, b, metric), (x, y))
    big_x = torch.from_numpy(rng.normal(size=(1, 40, 30))).requires_grad_(True)
    big_y = torch.from_numpy(rng.normal(size=(1, 30, 30))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.pairwise_distances(a, b, metric),
                                    (big_x, big_y))
    lab = torch.from_numpy(labels_for(2, 6, 3, rng))
    s = torch.from_numpy(rng.normal(size=(2, 6, 4))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.prototype_distances(a, lab, b, 3, metric),
                                    (s, x))


def test_cosine_gradient_at_zero_vector_matches_torch():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(ops.pairwise_distances(x, y, "cosine").sum(), (x, y))
    g2 = torch.autograd.grad(ops.pairwise_distances_torch(x, y, "cosine").sum(), (x, y))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("metric", ops.METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_equals_composition_and_torch_gradients(metric, dtype):
    rng = np.random.default_rng(4)
    s = torch.from_numpy(rng.normal(size=(32, 25, 64))).to(dtype).requires_grad_(True)
    q = torch.from_numpy(rng.normal(size=(32, 75, 64))).to(dtype).requires_grad_(True)
    lab = torch.from_numpy(labels_for(32, 25, 5, rng))
    w = torch.from_numpy(rng.normal(size=(32, 75, 5))).to(dtype)
    fused = ops.prototype_distances(s, lab, q, 5, metric)
    ref = ops.pairwise_distances_torch(q, ops.prototypes_torch(s, lab, 5), metric)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(fused, ref, **tol)
    g1 = torch.autograd.grad((fused * w).sum(), (s, q))
    g2 = torch.autograd.grad((ref * w).sum(), (s, q))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **tol)


def test_single_task_shapes():
    emb, lab = torch.randn(10, 8), torch.arange(5).repeat(2)
    assert ops.prototypes(emb, lab, 5).shape == (5, 8)
    assert ops.pairwise_distances(torch.randn(7, 8), torch.randn(5, 8)).shape == (7, 5)
    assert ops.prototype_distances(emb, lab, torch.randn(7, 8), 5).shape == (7, 5)
    assert mr.ops is ops


# ------------------------------------------------------------------ bad input

def test_bad_prototype_input():
    emb, lab = torch.randn(2, 6, 3), torch.arange(3).repeat(2).expand(2, 6)
    with pytest.raises(ValueError, match="method: expected one of"):
        ops.prototypes(emb, lab, 3, "mode")
    with pytest.raises(ValueError, match=r"labels: values must be in 0..3"):
        ops.prototypes(emb, lab + 1, 3)
    with pytest.raises(ValueError, match=r"labels: values must be in 0..3"):
        ops.prototypes(emb, lab - 1, 3)
    with pytest.raises(ValueError, match="has no support item of class 3"):
        ops.prototypes(emb, lab, 4)
    with pytest.raises(ValueError, match="labels: shape"):
        ops.prototypes(emb, lab[:, :5], 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        ops.prototypes(emb.clone().index_fill_(1, torch.tensor([0]), float("nan")), lab, 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        ops.prototypes(emb.clone().index_fill_(1, torch.tensor([0]), float("inf")), lab, 3,
                       "median")
    with pytest.raises(ValueError, match="trim"):
        ops.prototypes(emb, lab, 3, "trimmed_mean", trim=0.5)
    with pytest.raises(ValueError, match="tol"):
        ops.prototypes(emb, lab, 3, "geometric_median", tol=0)
    with pytest.raises(ValueError, match="rounds: must be an int >= 1"):
        ops.prototypes(emb, lab, 3, "filtered_mean", rounds=0)
    with pytest.raises(ValueError, match="metric: expected one of"):
        ops.prototypes_torch(emb, lab, 3, "filtered_mean", metric="l1")
    # checked whatever the method, not silently unused
    with pytest.raises(ValueError, match="trim: must be in"):
        ops.prototypes(emb, lab, 3, "mean", trim=5)
    with pytest.raises(ValueError, match="max_iter: must be >= 1"):
        ops.prototypes(emb, lab, 3, "median", max_iter=-4)
    with pytest.raises(ValueError, match="ways: must be >= 1"):
        ops.prototypes(emb, lab, 0)
    with pytest.raises(TypeError, match="labels: expected an integer"):
        ops.prototypes(emb, lab.float(), 3)
    with pytest.raises(TypeError, match="emb: expected a floating"):
        ops.prototypes(emb.long(), lab, 3)
    with pytest.raises(ValueError, match="emb: expected 2 or 3 dimensions"):
        ops.prototypes(emb[None], lab, 3)
    with pytest.raises(TypeError, match="emb: expected a torch.Tensor"):
        ops.prototypes(emb.numpy(), lab, 3)


def test_bad_distance_input():
    x, y = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="metric"):
        ops.pairwise_distances(x, y, "euclid")
    with pytest.raises(ValueError, match="must agree"):
        ops.pairwise_distances(x, torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="must agree"):
        ops.pairwise_distances(x, torch.randn(3, 5, 3))
    with pytest.raises(TypeError, match="dtype/device differ"):
        ops.pairwise_distances(x, y.double())
    with pytest.raises(ValueError, match="empty"):
        ops.pairwise_distances(torch.randn(2, 0, 3), y)
    with pytest.raises(ValueError, match="NaN or inf"):
        ops.pairwise_distances(x, y.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="NaN or inf"):
        ops.pairwise_distances_torch(x, y.clone().fill_(float("inf")))
    with pytest.raises(ValueError, match="both single"):
        ops.pairwise_distances(x[0], y)


def test_core_rejects_bad_buffers_directly():
    from metarobust import _core

    with pytest.raises(TypeError, match="float32 or float64"):
        _core.pairwise_distances(np.zeros((1, 2, 3), np.int32), np.zeros((1, 2, 3), np.int32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.pairwise_distances(np.zeros((1, 3, 2)).transpose(0, 2, 1), np.zeros((1, 2, 3)))
    with pytest.raises(TypeError, match="dtype differs"):
        _core.pairwise_distances(np.zeros((1, 2, 3)), np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="labels: expected shape"):
        _core.prototypes(np.zeros((1, 2, 3)), np.zeros((1, 3), np.int64), 1)
    with pytest.raises(ValueError, match="max_iter"):
        _core.prototypes(np.zeros((1, 2, 3)), np.zeros((1, 2), np.int64), 1, "geometric_median",
                         max_iter=0)
    with pytest.raises(ValueError, match="emb: needs a non-empty"):
        _core.prototypes(np.zeros((1, 0, 3)), np.zeros((1, 0), np.int64), 1)


# ------------------------------------------------------------------ every dtype of the torch code

HALF_TOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5,
            torch.float64: 1e-9}


def numpy_geometric_median(rows):
    m = rows.mean(0)
    for _ in range(10_000):
        d = np.linalg.norm(rows - m, axis=1)
        if (d == 0).any():
            return m
        nxt = (rows / d[:, None]).sum(0) / (1 / d).sum()
        if np.abs(nxt - m).max() <= 1e-15 * np.abs(rows).max():
            return nxt
        m = nxt
    return m


def numpy_robust_prototypes(emb, labels, ways, method, metric, trim=0.2, rounds=2):
    """float64 reference of every method for one task (S, D)."""
    if method in ("mean", "median", "trimmed_mean"):
        return numpy_prototypes(emb[None], labels[None], ways, method, trim)[0]
    centre = np.stack([numpy_geometric_median(emb[labels == c]) for c in range(ways)])
    if method == "geometric_median":
        return centre
    protos = centre
    for _ in range(rounds):
        keep = numpy_distances(emb[None], protos[None], metric)[0].argmin(1) == labels
        protos = np.stack([emb[keep & (labels == c)].mean(0) if (keep & (labels == c)).any()
                           else centre[c] for c in range(ways)])
    return protos


def clustered(scale, dtype, seed=0, ways=4, shots=5, dim=8):
    """Well-separated classes (so that the filtered mean keeps the same items in every
    precision), rounded to ``dtype``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(ways, dim)) * 10 * scale
    emb = centres.repeat(shots, 0) + rng.normal(size=(ways * shots, dim)) * scale
    labels = rng.permutation(np.arange(ways).repeat(shots))
    return torch.from_numpy(emb[np.argsort(np.argsort(labels))]).to(dtype), labels


@pytest.mark.parametrize("dtype", list(HALF_TOL))
@pytest.mark.parametrize("metric", ops.METRICS)
@pytest.mark.parametrize("method", ops.METHODS)
@pytest.mark.parametrize("scale", [1.0, 1e-5])
def test_prototypes_every_dtype_match_float64_numpy(method, metric, dtype, scale):
    # scale 1e-5: distances whose reciprocals overflow float16, the Weiszfeld weights
    emb, labels = clustered(scale, dtype)
    want = numpy_robust_prototypes(emb.double().numpy(), labels, 4, method, metric)
    lab = torch.from_numpy(labels)
    tol = (1e-12 if dtype == torch.float64 else 1e-7) * scale  # half runs in float32
    for fn in (ops.prototypes, ops.prototypes_torch):
        got = fn(emb, lab, 4, method, metric=metric, tol=tol, max_iter=1000)
        assert got.dtype == dtype and bool(torch.isfinite(got).all())
        np.testing.assert_allclose(got.double().numpy(), want, rtol=HALF_TOL[dtype],
                                   atol=HALF_TOL[dtype] * 10 * scale)


@pytest.mark.parametrize("dtype", list(HALF_TOL))
@pytest.mark.parametrize("metric", ops.METRICS)
def test_distances_every_dtype_match_float64_numpy(metric, dtype):
    emb, labels = clustered(1.0, dtype)
    query = torch.from_numpy(np.random.default_rng(1).normal(size=(9, 8)) * 10).to(dtype)
    lab = torch.from_numpy(labels)
    e64, q64 = emb.double().numpy()[None], query.double().numpy()[None]
    protos = numpy_prototypes(e64, labels[None], 4, "mean")
    cases = [(ops.pairwise_distances, (query, emb), numpy_distances(q64, e64, metric)),
             (ops.pairwise_distances_torch, (query, emb), numpy_distances(q64, e64, metric)),
             (lambda q, s: ops.prototype_distances(s, lab, q, 4, metric), (query, emb),
              numpy_distances(q64, protos, metric))]
    for fn, args, want in cases:
        got = fn(*args, metric) if fn is not cases[2][0] else fn(*args)
        assert got.dtype == dtype and bool(torch.isfinite(got).all())
        scale = np.abs(want).max()
        np.testing.assert_allclose(got.double().numpy(), want[0], rtol=HALF_TOL[dtype],
                                   atol=HALF_TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ops.METHODS)
def test_half_precision_gradients_are_finite(method, dtype):
    emb, labels = clustered(1.0, dtype)
    emb.requires_grad_(True)
    out = ops.prototypes(emb, torch.from_numpy(labels), 4, method)
    (grad,) = torch.autograd.grad(out.float().sum(), emb)
    assert grad.dtype == dtype and bool(torch.isfinite(grad).all())


def test_unsupported_dtypes_are_refused_naming_the_argument():
    lab = torch.arange(3).repeat(2)
    odd = [torch.complex64, torch.int32, torch.bool]
    odd += [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)]
    for dt in odd:
        t = torch.zeros(6, 3).to(dt)
        with pytest.raises(TypeError, match="emb: expected a floating-point tensor"):
            ops.prototypes(t, lab, 3)
        with pytest.raises(TypeError, match="emb: expected a floating-point tensor"):
            ops.prototypes_torch(t, lab, 3)
        with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
            ops.pairwise_distances(t, t)
        with pytest.raises(TypeError, match="support: expected a floating-point tensor"):
            ops.prototype_distances(t, lab, t, 3)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(max_iter=2.5), TypeError, "max_iter: expected an int, got 2.5"),
    (dict(max_iter=None), TypeError, "max_iter: expected an int, got None"),
    (dict(max_iter=2**70), ValueError, "max_iter: must be <= "),
    (dict(trim=None), TypeError, "trim: expected a real number, got None"),
    (dict(trim="0.1"), TypeError, "trim: expected a real number, got '0.1'"),
    (dict(trim=float("nan")), ValueError, r"trim: must be in \[0, 0.5\), got nan"),
    (dict(tol=None), TypeError, "tol: expected a real number, got None"),
    (dict(tol=True), TypeError, "tol: expected a real number, got True"),
    (dict(tol=float("inf")), ValueError, "tol: must be finite and > 0"),
    (dict(rounds=2.0), TypeError, "rounds: must be an int >= 1, got 2.0"),
    (dict(rounds=None), TypeError, "rounds: must be an int >= 1, got None"),
    (dict(metric=None), ValueError, "metric: expected one of"),
    (dict(metric=["cosine"]), ValueError, "metric: expected one of"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("method", ["mean", "geometric_median"])
def test_prototype_options_are_checked_and_named(kwargs, error, words, dtype, method):
    emb, lab = torch.randn(6, 3).to(dtype), torch.arange(3).repeat(2)
    for fn in (ops.prototypes, ops.prototypes_torch):
        with pytest.raises(error, match=words):
            fn(emb, lab, 3, method, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_ways_beyond_the_support_set_is_refused_before_allocating(dtype):
    # ways >= 2**31 used to reach torch's allocator (one_hot) or the Rust output allocation
    emb, lab = torch.randn(6, 3).to(dtype), torch.arange(3).repeat(2)
    calls = (lambda w: ops.prototypes(emb, lab, w),
             lambda w: ops.prototypes_torch(emb, lab, w, "median"),
             lambda w: ops.prototypes(emb, lab, w, "geometric_median"),
             lambda w: ops.prototype_distances(emb, lab, emb, w))
    for ways in (7, 2**31, 2**70):
        for call in calls:
            with pytest.raises(ValueError, match=f"ways: {ways} classes, but the 6 support"):
                call(ways)
    with pytest.raises(TypeError, match="ways: expected an int, got 3.0"):
        ops.prototypes(emb, lab, 3.0)
    assert ops.prototypes(emb, lab, np.int64(3)).shape == (3, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ops.METHODS)
def test_empty_embeddings_are_refused(method, dtype):
    # (0, D) used to reach an IndexError in the median's gather (float16)
    for shape, lab in (((0, 3), torch.zeros(0, dtype=torch.int64)),
                       ((6, 0), torch.arange(3).repeat(2)),
                       ((0, 6, 3), torch.zeros(0, 6, dtype=torch.int64))):
        for fn in (ops.prototypes, ops.prototypes_torch):
            with pytest.raises(ValueError, match=r"emb: empty shape"):
                fn(torch.zeros(shape, dtype=dtype), lab, 1, method)


def test_prototype_distances_names_its_own_arguments():
    s, lab, q = torch.randn(2, 6, 3), torch.arange(3).repeat(2).expand(2, 6), torch.randn(2, 4, 3)
    cases = [
        ((s, lab, q.double(), 3), TypeError, "query: torch.float64 on cpu, support torch.float32"),
        ((s.half(), lab, q, 3), TypeError, "query: torch.float32 on cpu, support torch.float16"),
        ((s, lab, torch.randn(2, 4, 5), 3), ValueError, "query: shape .* must agree with support"),
        ((s, lab, torch.randn(3, 4, 3), 3), ValueError, "query: shape .* must agree with support"),
        ((s, lab, q[:, :0], 3), ValueError, "query: empty shape"),
        ((s, lab, q[0], 3), ValueError, "support, query: both single"),
        ((s.half(), lab, q.half().fill_(float("nan")), 3), ValueError, "query: holds NaN"),
        ((s.half().fill_(float("inf")), lab, q.half(), 3), ValueError, "support: holds NaN"),
        ((s, None, q, 3), TypeError, "labels: expected a torch.Tensor"),
        ((s, lab, q, 3, None), ValueError, "metric: expected one of"),
    ]
    for args, error, words in cases:
        with pytest.raises(error, match=words):
            ops.prototype_distances(*args)


def test_filtered_mean_with_many_rounds_stops_at_its_fixed_point():
    emb, labels = clustered(1.0, torch.float64)
    lab = torch.from_numpy(labels)
    for fn in (ops.prototypes, ops.prototypes_torch):
        many = fn(emb, lab, 4, "filtered_mean", rounds=2**62)
        torch.testing.assert_close(many, fn(emb, lab, 4, "filtered_mean", rounds=3),
                                   rtol=0, atol=0)


def test_labels_of_any_integer_dtype():
    emb = torch.randn(6, 3, dtype=torch.float64)
    want = ops.prototypes(emb, torch.arange(3).repeat(2), 3)
    for dt in (torch.int8, torch.int16, torch.int32, torch.uint8):
        torch.testing.assert_close(ops.prototypes(emb, torch.arange(3).repeat(2).to(dt), 3), want)
    with pytest.raises(TypeError, match="labels: expected an integer tensor, got torch.bool"):
        ops.prototypes(emb, torch.ones(6, dtype=torch.bool), 1)


ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                st.text(max_size=4), st.lists(st.integers(-2, 2), max_size=2),
                st.sampled_from([np.int64(2), np.float32(0.5), torch.tensor(1.0), b"x"]))
OPTIONS = dict(ways=3, method="geometric_median", trim=0.2, tol=1e-6, max_iter=20,
               metric="cosine", rounds=2)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(OPTIONS)), value=ANY,
       dtype=st.sampled_from([torch.float32, torch.float16]))
def test_any_option_value_works_or_is_named(name, value, dtype):
    """Whatever one option holds, the call succeeds or raises a ValueError or TypeError that
    names that option (never a raw comparison error, an allocator error or an IndexError)."""
    emb, lab = torch.randn(6, 4).to(dtype), torch.arange(3).repeat(2)
    kwargs = OPTIONS | {name: value}
    ways, method = kwargs.pop("ways"), kwargs.pop("method")
    try:
        out = ops.prototypes(emb, lab, ways, method, **kwargs)
    except (ValueError, TypeError) as e:
        # a valid ways that the labels exceed is the labels' error, which names both
        named = str(e).startswith(f"{name}: ") or (name == "ways" and "(ways)" in str(e))
        assert named, (name, value, e)
    else:
        assert bool(torch.isfinite(out).all())
