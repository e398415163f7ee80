"""GPU figures for the foundation: the uint8 episode path to the GPU and the ops on CUDA.

    python benches/gpu_ops.py            # prints tables; run by benches/gpu_check.sh

1. Episodes/s of Rust uint8 batches in pinned memory, copied with non_blocking=True and
   normalised on the GPU, against the same without pinning and the float32 CPU path.
2. Fused prototypes + distances (forward+backward) on CUDA (torch code) against the CPU Rust
   kernels, at the benchmark shapes (B, N, K, Q, D).
"""

from __future__ import annotations

import time

import numpy as np
import torch

import metarobust as mr


def timed(fn, min_time=0.5):
    fn()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += 1
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def episode_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (964 * 20, 1, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(964, dtype=np.int64), 20)
    batch = 64
    print(f"episode path, Omniglot-shaped data, 5w1s15q, batch {batch}, "
          f"{mr._core.num_threads()} sampler threads")
    u8 = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=15, dtype="uint8")
    f32 = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=15)
    state = {"i": 0}

    def run(sampler, pin):
        def step():
            b = sampler.sample_batch(state["i"], batch, pin_memory=pin)
            state["i"] += batch
            g = b.to("cuda", non_blocking=pin)
            x = g.query_x.float().div_(255) if g.query_x.dtype == torch.uint8 else g.query_x
            return x.sum()
        return step

    for name, sampler, pin in (("uint8 pinned, normalised on GPU", u8, True),
                               ("uint8 pageable", u8, False),
                               ("float32 pageable", f32, False)):
        t = timed(run(sampler, pin))
        print(f"  {name:34s} {batch / t:12,.0f} episodes/s")
    with u8.batches(batch, num_batches=200, prefetch=3, pin_memory=True) as it:
        t0 = time.perf_counter()
        for b in it:
            b.to("cuda", non_blocking=True).query_x.float().div_(255).sum()
        torch.cuda.synchronize()
        rate = 200 * batch / (time.perf_counter() - t0)
        print(f"  {'prefetch iterator, uint8 pinned':34s} {rate:12,.0f} episodes/s")


def kernels():
    print("fused prototypes + distances, forward+backward, float32")
    print(f"  {'(B, N, K, Q, D)':22s} {'CPU Rust ms':>12s} {'CUDA ms':>10s} {'ratio':>8s}")
    for b, n, k, q, d in [(32, 5, 5, 75, 64), (4, 20, 5, 300, 1600), (1, 64, 5, 320, 640)]:
        lab = (torch.arange(n * k) % n).expand(b, n * k).contiguous()
        res = []
        for dev in ("cpu", "cuda"):
            s = torch.randn(b, n * k, d, device=dev, requires_grad=True)
            x = torch.randn(b, q, d, device=dev, requires_grad=True)
            lb = lab.to(dev)

            def step(s=s, x=x, lb=lb, n=n):
                mr.ops.prototype_distances(s, lb, x, n).sum().backward()
            res.append(timed(step, 0.3) * 1e3)
        print(f"  {str((b, n, k, q, d)):22s} {res[0]:12.3f} {res[1]:10.3f} {res[0] / res[1]:7.1f}x")


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    episode_path()
    kernels()
