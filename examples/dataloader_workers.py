"""Episodes in DataLoader worker processes.

    python examples/dataloader_workers.py [--workers 2] [--episodes 64]

The sampler already fills batches on several threads; when a pipeline wants worker
processes anyway, EpisodeDataset makes episodes 0..n-1 a map-style Dataset. Workers give
the same episodes as the main process: episode i depends only on the seed and i.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

import metarobust as mr
from metarobust.episodes import EpisodeDataset


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--episodes", type=int, default=64, help="episodes to load")
    p.add_argument("--batch-size", type=int, default=8, help="episodes per batch")
    args = p.parse_args(argv)

    data = mr.data.glyphs(num_classes=50, per_class=20, seed=0)
    sampler = mr.EpisodeSampler(data, ways=5, shots=1, queries=15, seed=0)
    episodes = EpisodeDataset(sampler, args.episodes)

    # one episode per item
    for i, ep in enumerate(DataLoader(episodes, batch_size=None, num_workers=args.workers)):
        assert torch.equal(ep.query_x, sampler.sample(i).query_x)

    # batches of episodes, stacked like sampler.sample_batch (k * B, B)
    loader = DataLoader(episodes, batch_size=args.batch_size, num_workers=args.workers,
                        collate_fn=mr.collate_episodes)
    for k, batch in enumerate(loader):
        expected = sampler.sample_batch(k * args.batch_size, args.batch_size)
        assert torch.equal(batch.support_x, expected.support_x)
    print(f"{args.episodes} episodes through {args.workers} workers: the same as the sampler's")


if __name__ == "__main__":
    main()
