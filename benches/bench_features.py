"""Feature-episode throughput: the Rust sampler over float32 feature vectors (N, D) against
a NumPy reference gathering the same episodes, in one process, reported as ratios.

    PYTHONPATH=python python benches/bench_features.py [--batch 64] [--repeats 7]

Data: Omniglot-background-shaped labels (964 classes x 20 items, as ``bench.omniglot_like``
gives them) with random standard-normal features of D = 64 (a Conv-4 embedding) and 640 (a
ResNet-12 embedding). Candidates, each producing one batch of ``batch`` episodes:

- ``rust``: ``EpisodeSampler(features, labels, ...).sample_batch(start, batch)``, fresh
  output tensors, the episode draws included;
- ``numpy``: ``features[support_idx]`` and ``features[query_idx]`` (fancy indexing into
  fresh arrays) with the item indices of the same episodes precomputed, so the reference
  pays for the gather only, not for drawing the episodes;
- ``numpy+draw``: the vectorised NumPy sampler of the sampler benchmark
  (``bench.sampler.NumpyEpisodeSampler.draw``: a batch's classes and items drawn at once)
  followed by the same fancy-indexing gather: a whole NumPy feature-episode sampler (other
  episodes than Rust's, the same amount of work).

The rows are checked equal before timing. Seconds per batch are the median of interleaved
rounds (``bench.timing.measure``); ratio = NumPy seconds / Rust seconds (> 1: Rust faster).
"""

from __future__ import annotations

import argparse
import platform
import statistics

import numpy as np
import torch

from metarobust import EpisodeSampler
from metarobust.bench.sampler import NumpyEpisodeSampler
from metarobust.bench.timing import measure

SETTINGS = ((5, 1, 15), (5, 5, 15), (20, 5, 15))
DIMS = (64, 640)


def episode_items(labels: np.ndarray, ways: int, shots: int, queries: int, seed: int,
                  start: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The item indices of episodes ``start .. start + batch``: an image sampler over images
    that hold their own index (two bytes) draws the same episodes as the feature sampler."""
    n = labels.size
    ids = np.arange(n)
    images = np.zeros((n, 2, 1, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 1, 0, 0] = ids // 256, ids % 256
    s = EpisodeSampler(images, labels, ways=ways, shots=shots, queries=queries, seed=seed,
                       dtype="uint8", layout="NCHW")
    b = s.sample_batch(start, batch)

    def ids_of(x: torch.Tensor) -> np.ndarray:
        a = x.numpy().astype(np.int64)
        return a[..., 0, 0, 0] * 256 + a[..., 1, 0, 0]

    return ids_of(b.support_x), ids_of(b.query_x)


def run(batch: int, repeats: int, min_time: float) -> list[dict]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(964, dtype=np.int64), 20)
    rows = []
    for dim in DIMS:
        feats = rng.standard_normal((labels.size, dim)).astype(np.float32)
        for ways, shots, queries in SETTINGS:
            seed, start = 1, 1000
            sampler = EpisodeSampler(feats, labels, ways=ways, shots=shots, queries=queries,
                                     seed=seed)
            sup, qry = episode_items(labels, ways, shots, queries, seed, start, batch)
            ep = sampler.sample_batch(start, batch)
            assert np.array_equal(ep.support_x.numpy(), feats[sup])
            assert np.array_equal(ep.query_x.numpy(), feats[qry])
            ns = NumpyEpisodeSampler(feats, labels, ways, shots, queries, seed=seed)

            def numpy_draw(ns=ns, feats=feats) -> tuple[np.ndarray, np.ndarray]:
                _, s_idx, q_idx = ns.draw(batch)
                return feats[s_idx.reshape(batch, -1)], feats[q_idx.reshape(batch, -1)]

            times = measure({
                "rust": lambda s=sampler, start=start: s.sample_batch(start, batch),
                "numpy": lambda sup=sup, qry=qry, feats=feats: (feats[sup], feats[qry]),
                "numpy+draw": numpy_draw,
            }, repeats=repeats, min_time=min_time)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append(dict(setting=f"{ways}w{shots}s{queries}q", dim=dim, batch=batch,
                             rust_ms=1e3 * med["rust"], numpy_ms=1e3 * med["numpy"],
                             draw_ms=1e3 * med["numpy+draw"],
                             ratio=med["numpy"] / med["rust"],
                             draw_ratio=med["numpy+draw"] / med["rust"]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.2)
    args = p.parse_args()
    from metarobust import _core

    print(f"# {platform.processor() or platform.machine()}, {_core.num_threads()} sampler "
          f"threads, batch {args.batch}")
    print(f"{'setting':>10} {'D':>5} {'rust ms':>9} {'numpy ms':>9} {'numpy/rust':>10} "
          f"{'numpy+draw ms':>13} {'numpy+draw/rust':>15}")
    for r in run(args.batch, args.repeats, args.min_time):
        print(f"{r['setting']:>10} {r['dim']:>5} {r['rust_ms']:>9.3f} {r['numpy_ms']:>9.3f} "
              f"{r['ratio']:>10.2f} {r['draw_ms']:>13.3f} {r['draw_ratio']:>15.2f}")


if __name__ == "__main__":
    main()
