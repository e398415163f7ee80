"""pytest-benchmark suite: fused mean prototypes + squared Euclidean distances in Rust
(``metarobust.ops.prototype_distances``) against eager torch expressions, forward and
forward+backward, float32 (candidates from :mod:`metarobust.bench`).

Not part of the normal tests (``testpaths = ["tests"]``); run with

    pytest benches/test_bench_kernels.py

One benchmark group per (shape, mode); shapes are (B, N, K, Q, D) = (tasks, ways, shots,
queries per task, dim). ``extra_info["gflop"]`` holds the FLOPs counted per call
(:func:`metarobust.bench.kernel_flops`). Ratio tables: ``python benches/compare.py kernels``.
"""

from __future__ import annotations

import pytest
import torch

from metarobust import bench

pytest.importorskip("pytest_benchmark")


def _id(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


@pytest.mark.parametrize("candidate", bench.default_kernel_candidates())
@pytest.mark.parametrize("mode", bench.MODES)
@pytest.mark.parametrize("shape", bench.DEFAULT_KERNEL_SHAPES, ids=_id)
def test_kernels(benchmark, shape, mode, candidate):
    fn = bench.kernel_candidates(shape, mode, names=[candidate])[candidate]
    benchmark.group = f"kernels (B,N,K,Q,D)={_id(shape)} {mode}"
    benchmark.extra_info["gflop"] = bench.kernel_flops(shape, mode) / 1e9
    dist = benchmark(fn)
    b, n, _, q, _ = shape
    assert dist.shape == (b, q, n)
    assert dist.dtype == torch.float32
