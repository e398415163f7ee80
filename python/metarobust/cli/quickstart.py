"""``metarobust quickstart``: the main job on the embedded glyphs, a few minutes on a CPU.

A raw-pixel baseline, then a ProtoNet and a first-order MAML trained briefly and evaluated
on held-out glyph classes (mean accuracy ± 95% CI)."""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

COUNTS = ("ways", "shots", "episodes", "classes", "train_classes", "proto_episodes",
          "maml_episodes")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    q = sub.add_parser("quickstart", help="the main job on the embedded glyph data")
    q.add_argument("--ways", type=int, default=5, help="classes per test episode")
    q.add_argument("--shots", type=int, default=1, help="support items per class")
    q.add_argument("--episodes", type=int, default=300, help="evaluation episodes")
    q.add_argument("--classes", type=int, default=200, help="held-out glyph classes")
    q.add_argument("--train-classes", type=int, default=1000, help="training glyph classes")
    q.add_argument("--proto-episodes", type=int, default=300, help="ProtoNet training episodes")
    q.add_argument("--maml-episodes", type=int, default=600, help="FOMAML training tasks")
    q.add_argument("--seed", type=int, default=0,
                   help="seed of the glyphs, the training and the test episodes")
    q.set_defaults(func=run)
    return q


def _pixel_baseline(sampler: Any, args: argparse.Namespace) -> tuple[float, float]:
    """Prototypes of raw pixels: what the learners must beat."""
    import torch

    from .. import ops
    from ..evaluate import mean_ci95

    def flat(x: torch.Tensor) -> torch.Tensor:  # (B, n, C, H, W) -> (B, n, D) in [0, 1]
        return x.flatten(2).float() / 255

    scores = []
    with sampler.batches(50, num_batches=-(-args.episodes // 50)) as batches:
        for b in batches:
            dist = ops.prototype_distances(flat(b.support_x), b.support_y, flat(b.query_x),
                                           args.ways)
            scores.append((dist.argmin(-1) == b.query_y).double().mean(1))
    return mean_ci95(torch.cat(scores)[: args.episodes])


def _learner_rows(sampler: Any, args: argparse.Namespace) -> list[tuple[str, float, float,
                                                                         float]]:
    from ..config import TrainConfig
    from ..evaluate import evaluate
    from ..train import Trainer

    runs = [("protonet", dict(ways=2 * args.ways, shots=args.shots, queries=5, meta_batch=1,
                              episodes=args.proto_episodes, lr=1e-3)),
            ("fomaml", dict(ways=args.ways, shots=args.shots, queries=5, meta_batch=4,
                            episodes=args.maml_episodes, lr=1e-3, inner_lr=0.4,
                            inner_steps=1, test_inner_steps=3))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in runs:
            cfg = TrainConfig(learner=name, dataset="glyphs", seed=args.seed,
                              glyph_classes=args.train_classes, val_every=10**9,
                              test_ways=args.ways, test_shots=args.shots, test_queries=15,
                              **kw)
            t0 = time.perf_counter()
            trainer = Trainer(cfg, f"{tmp}/{name}")
            trainer.fit()
            res = evaluate(trainer.learner, sampler, args.episodes, device=trainer.device)
            rows.append((f"{name}, {kw['episodes']} training episodes", res["accuracy"],
                         res["ci95"], time.perf_counter() - t0))
    return rows


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import data
    from ..episodes import EpisodeSampler

    for name in COUNTS:
        if getattr(args, name) < 1:
            raise ValueError(f"{name}: must be >= 1, got {getattr(args, name)}")
    torch.manual_seed(args.seed)
    test = data.glyphs(num_classes=args.classes, per_class=20, image_size=28,
                       seed=args.seed, split="test")
    sampler = EpisodeSampler(test, ways=args.ways, shots=args.shots, queries=15,
                             seed=args.seed, dtype="uint8")
    rows = [("raw pixels, prototypes (no training)", *_pixel_baseline(sampler, args),
             float("nan")), *_learner_rows(sampler, args)]
    print(f"\n{args.ways}-way {args.shots}-shot on {test.num_classes} held-out glyph classes, "
          f"{args.episodes} episodes each (chance {100 / args.ways:.0f}%):")
    print(f"  {'method':42s} {'accuracy':>9s} {'95% CI':>8s} {'train+eval':>11s}")
    for name, acc, ci, secs in rows:
        took = "-" if secs != secs else f"{secs:.1f}s"
        print(f"  {name:42s} {100 * acc:8.2f}% {100 * ci:7.2f}% {took:>11s}")
    return 0
