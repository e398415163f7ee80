"""Your own training loop: the sampler's episodes, a learner, an optimiser.

    python examples/train_loop.py [--steps 2000] [--meta-batch 4] [--episodes 600]

Trains a ProtoNet on the embedded glyphs (no download) and evaluates it on held-out glyph
classes. Swap in any dataset (mr.data.omniglot, from_arrays, ...) and any learner.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import metarobust as mr


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    p.add_argument("--meta-batch", type=int, default=4, help="episodes per step")
    p.add_argument("--episodes", type=int, default=600, help="test episodes")
    p.add_argument("--classes", type=int, default=200, help="glyph classes per split")
    args = p.parse_args(argv)

    train = mr.data.glyphs(num_classes=args.classes, per_class=20, seed=0, split="train")
    test = mr.data.glyphs(num_classes=args.classes, per_class=20, seed=0, split="test")
    sampler = mr.EpisodeSampler(train, ways=5, shots=1, queries=15, seed=0)

    learner = mr.learners.ProtoNet(mr.models.build_model("conv4_snell", in_channels=1))
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
    learner.train()
    # prefetch=2: the next batches are filled on a background thread while this one trains
    for step, batch in enumerate(sampler.batches(args.meta_batch, num_batches=args.steps)):
        logits = learner(batch.support_x, batch.support_y, batch.query_x)  # (B, 75, 5)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            print(f"step {step:5d}  loss {loss.item():.3f}")

    learner.eval()
    test_sampler = mr.EpisodeSampler(test, ways=5, shots=1, queries=15, seed=1)
    result = mr.evaluate.evaluate(learner, test_sampler, episodes=args.episodes, progress=False)
    print(f"5-way 1-shot on held-out classes: {result['accuracy']:.2%} ± {result['ci95']:.2%}")
    return result


if __name__ == "__main__":
    main()
