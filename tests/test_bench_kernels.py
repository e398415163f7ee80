"""metarobust.bench.kernels: every candidate computes the same prototype distances as a
NumPy reference, and the tables and FLOP counts add up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarobust.bench import kernels as bk

SHAPE = (2, 3, 2, 5, 4)  # (B, N, K, Q, D)


def _numpy_distances(shape, seed=0) -> np.ndarray:
    """Mean prototypes and squared Euclidean distances in float64, from the same inputs."""
    b, n, k, q, d = shape
    s, _, qr, _ = bk.kernel_inputs(shape, False, seed)
    protos = s.numpy().astype(np.float64).reshape(b, n, k, d).mean(2)
    diff = qr.numpy().astype(np.float64)[:, :, None, :] - protos[:, None, :, :]
    return (diff ** 2).sum(-1)


@pytest.mark.parametrize("mode", bk.MODES)
def test_every_candidate_agrees_with_numpy(mode):
    names = [*bk.KERNEL_CANDIDATES, *(f"{n}/1t" for n in bk.KERNEL_CANDIDATES[1:])]
    cands = bk.kernel_candidates(SHAPE, mode, names=names)
    assert list(cands) == names
    ref = _numpy_distances(SHAPE)
    for name, fn in cands.items():
        got = fn()
        assert got.shape == (2, 5, 3), name
        np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
        if mode == "fwd+bwd":
            assert got.requires_grad, name


def test_kernel_inputs_are_grouped_by_class_and_reproducible():
    s, lab, q, w = bk.kernel_inputs(SHAPE, True, seed=3)
    assert s.shape == (2, 6, 4) and q.shape == (2, 5, 4) and w.shape == (2, 5, 3)
    assert s.requires_grad and q.requires_grad and not w.requires_grad
    assert lab.tolist() == [[0, 0, 1, 1, 2, 2]] * 2
    assert torch.equal(bk.kernel_inputs(SHAPE, False, seed=3)[0], s.detach())


def test_kernel_flops_counts_gemm_and_prototype_sums():
    b, n, k, q, d = SHAPE
    assert bk.kernel_flops(SHAPE, "fwd") == 2 * b * q * n * d + b * n * k * d == 288
    assert bk.kernel_flops(SHAPE, "fwd+bwd") == 3 * 240 + 2 * 48


def test_default_candidates_add_one_thread_variants_when_torch_has_threads():
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert bk.default_kernel_candidates() == bk.KERNEL_CANDIDATES
        torch.set_num_threads(2)
        assert bk.default_kernel_candidates() == (
            *bk.KERNEL_CANDIDATES, "torch_expand/1t", "torch_gemm/1t", "torch_cdist/1t")
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("mode, names, words", [
    ("bwd", None, "mode"),
    ("fwd", ["rust/1t"], "'rust/1t'"),
    ("fwd", ["torch_gemm/2t"], "'torch_gemm/2t'"),
    ("fwd", ["numpy"], "'numpy'"),
])
def test_bad_mode_or_candidate_is_named(mode, names, words):
    with pytest.raises(ValueError, match=words):
        bk.kernel_candidates(SHAPE, mode, names=names)


def test_check_agree_catches_a_wrong_candidate():
    cands = bk.kernel_candidates(SHAPE, "fwd", names=["rust", "torch_gemm"])
    bk._check_agree(cands)
    cands["wrong"] = lambda: cands["rust"]() * 1.01
    with pytest.raises(AssertionError, match="wrong"):
        bk._check_agree(cands)


def test_bench_kernels_rows_and_summary_on_a_tiny_shape():
    names = ["rust", "torch_expand", "torch_gemm"]
    rows = bk.bench_kernels([SHAPE], repeats=1, min_time=1e-4, names=names)
    assert [(r["mode"], r["candidate"]) for r in rows] == [
        (m, n) for m in bk.MODES for n in names]
    for r in rows:
        assert r["shape (B,N,K,Q,D)"] == "(2,3,2,5,4)"
        assert r["GFLOP/s"] == pytest.approx(
            bk.kernel_flops(SHAPE, r["mode"]) / (r["ms/call"] / 1e3) / 1e9)
    summary = bk.kernel_summary(rows)
    assert [s["mode"] for s in summary] == list(bk.MODES)
    for s in summary:
        torch_ms = {r["candidate"]: r["ms/call"] for r in rows
                    if r["mode"] == s["mode"] and r["candidate"] != "rust"}
        assert s["torch ms"] == min(torch_ms.values())
        assert s["best torch"] == min(torch_ms, key=torch_ms.get)
        assert s["rust speedup"] == pytest.approx(s["torch ms"] / s["rust ms"])


def test_kernel_summary_skips_groups_without_rust_or_torch():
    row = {"shape (B,N,K,Q,D)": "(1,1,1,1,1)", "mode": "fwd", "ms/call": 1.0, "GFLOP/s": 1.0}
    assert bk.kernel_summary([{**row, "candidate": "rust"}]) == []
    assert bk.kernel_summary([{**row, "candidate": "torch_gemm"}]) == []


def test_kernel_overhead_probe_rows():
    rows = bk.kernel_overhead_probe(SHAPE, repeats=1, min_time=1e-4)
    calls = [r["call"] for r in rows]
    assert calls[:5] == ["ops.prototype_distances fwd", "_core.proto_distances",
                         "_core.proto_distances_backward", "ops fwd+bwd (autograd)",
                         "_core fwd then backward"]
    assert all("overhead" in c for c in calls[5:]) and len(calls) == 7
    us = {r["call"]: r["us/call"] for r in rows}
    assert us[calls[5]] == pytest.approx(us[calls[0]] - us[calls[1]])
    assert all(math.isnan(r["median us"]) for r in rows[5:])
