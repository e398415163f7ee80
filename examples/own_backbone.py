"""Your own backbone: any nn.Module, in a loop of your own and in the Trainer.

    python examples/own_backbone.py [--steps 300] [--out runs/own-backbone]

ProtoNet takes the backbone as it is; MAML sizes its linear head by a dry run on
`input_shape` when the backbone has no `out_features`. The Trainer takes the backbone
object too, and `mr.load_run` rebuilds the learner around a fresh copy of it.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import metarobust as mr


def make_backbone(in_channels: int = 1, width: int = 32) -> nn.Module:
    """A small CNN: (N, C, 28, 28) -> (N, width * 4 * 4) features."""
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                             nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(in_channels, width), block(width, width),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300, help="steps of each training")
    p.add_argument("--out", default="runs/own-backbone", help="the Trainer's run directory")
    args = p.parse_args(argv)

    data = mr.data.glyphs(num_classes=100, per_class=20, seed=0)
    images, labels = data.images, data.labels           # any uint8 (N, C, H, W) + labels
    sampler = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=5, seed=0)

    # 1. In a loop of your own: MAML around the custom backbone
    learner = mr.learners.MAML(make_backbone(), ways=5, inner_lr=0.1, inner_steps=1,
                               order="first", input_shape=(1, 28, 28))
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    learner.train()
    for step in range(args.steps):
        batch = sampler.sample_batch(step * 4, 4)
        logits = learner(batch.support_x, batch.support_y, batch.query_x)   # (4, 25, 5)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"first-order MAML, last loss {loss.item():.3f}")

    # 2. In the Trainer: checkpoints, validation, resuming, with the same backbone class
    from metarobust.config import TrainConfig
    from metarobust.train import Trainer

    cfg = TrainConfig(learner="protonet", ways=5, shots=1, queries=5, steps=args.steps)
    Trainer(cfg, args.out, dataset=(images, labels), model=make_backbone()).fit()
    trained = mr.load_run(args.out, which="last", model=make_backbone())
    ep = sampler.sample(10_000)
    pred = trained.predict(ep.support_x, ep.support_y, ep.query_x).argmax(-1)
    print(f"ProtoNet from the run: {(pred == ep.query_y).float().mean():.0%} on one episode")


if __name__ == "__main__":
    main()
