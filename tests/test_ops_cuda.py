"""CUDA path of mr.ops (torch code) against the CPU path (Rust kernels), and the pinned-memory
episode path. Needs a GPU: run by benches/gpu_check.sh; skipped (and reported as skipped)
where torch sees none."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metarobust as mr
from metarobust import ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def labelled(tasks, support, ways, seed):
    g = torch.Generator().manual_seed(seed)
    lab = torch.arange(support) % ways
    return torch.stack([lab[torch.randperm(support, generator=g)] for _ in range(tasks)])


@pytest.mark.parametrize("method", ops.METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prototypes_cuda_equals_cpu_rust(method, dtype):
    emb = torch.randn(8, 25, 64, dtype=dtype, generator=torch.Generator().manual_seed(0))
    lab = labelled(8, 25, 5, 1)
    w = torch.randn(8, 5, 64, dtype=dtype)
    kw = dict(tol=1e-10, max_iter=2000)
    cpu_in = emb.clone().requires_grad_(True)
    gpu_in = emb.cuda().requires_grad_(True)
    cpu = ops.prototypes(cpu_in, lab, 5, method, **kw)
    gpu = ops.prototypes(gpu_in, lab.cuda(), 5, method, **kw)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(gpu.cpu(), cpu, **tol)
    (g_cpu,) = torch.autograd.grad((cpu * w).sum(), cpu_in)
    (g_gpu,) = torch.autograd.grad((gpu * w.cuda()).sum(), gpu_in)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, **tol)


@pytest.mark.parametrize("metric", ops.METRICS)
@pytest.mark.parametrize("shape", [(32, 5, 5, 75, 64), (4, 20, 5, 300, 1600)])
def test_fused_and_pairwise_cuda_equal_cpu_rust(metric, shape):
    b, n, k, q, d = shape
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(b, n * k, d, dtype=torch.float64, generator=gen)
    x = torch.randn(b, q, d, dtype=torch.float64, generator=gen)
    lab = labelled(b, n * k, n, 3)
    w = torch.randn(b, q, n, dtype=torch.float64, generator=gen)
    outs, grads = [], []
    for dev in ("cpu", "cuda"):
        si, xi = s.to(dev).requires_grad_(True), x.to(dev).requires_grad_(True)
        dist = ops.prototype_distances(si, lab.to(dev), xi, n, metric)
        pair = ops.pairwise_distances(xi, ops.prototypes(si, lab.to(dev), n), metric)
        torch.testing.assert_close(dist, pair)
        grads.append([g.cpu() for g in torch.autograd.grad((dist * w.to(dev)).sum(), (si, xi))])
        outs.append(dist.detach().cpu())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-9, atol=1e-8)
    for a, c in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-8)


def test_bf16_cuda_distances_close_to_float32():
    x = torch.randn(4, 75, 64, device="cuda")
    y = torch.randn(4, 5, 64, device="cuda")
    ref = ops.pairwise_distances(x, y)
    low = ops.pairwise_distances(x.bfloat16(), y.bfloat16()).float()
    assert ((low - ref).abs() / ref.abs().clamp_min(1)).max() < 0.05


def test_pinned_uint8_episodes_reach_the_gpu_intact():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50 * 20, 1, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(50, dtype=np.int64), 20)
    sampler = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=15, seed=0,
                                dtype="uint8")
    batch = sampler.sample_batch(0, 16, pin_memory=True)
    assert batch.query_x.is_pinned()
    on_gpu = batch.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(on_gpu.query_x.cpu(), batch.query_x)
    as_float = on_gpu.query_x.float() / 255
    f32 = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=15, seed=0)
    torch.testing.assert_close(as_float.cpu(), f32.sample_batch(0, 16).query_x, rtol=0, atol=1e-7)
