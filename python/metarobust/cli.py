"""The ``metarobust`` command line.

::

    metarobust quickstart                  # the main job on the embedded glyphs
    metarobust data prepare omniglot --root R --split background --out CACHE
    metarobust bench sampler|kernels|all   # side-by-side ratios against NumPy/torch
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from . import __version__
from .bench import add_bench_parser
from .data.prepare import add_data_parser


def quickstart(args: argparse.Namespace) -> int:
    """Embedded glyphs -> Rust episodes -> a raw-pixel prototype classifier with a 95% CI."""
    import metarobust as mr

    t0 = time.perf_counter()
    test = mr.data.glyphs(num_classes=args.classes, per_class=20, image_size=28,
                          seed=args.seed, split="test")
    print(f"glyphs: {len(test)} images of {test.num_classes} classes rendered in "
          f"{time.perf_counter() - t0:.2f} s")
    sampler = mr.EpisodeSampler(test, ways=args.ways, shots=args.shots, queries=15,
                                seed=args.seed)
    flat = lambda x: x.flatten(2)  # noqa: E731 - (B, n, C, H, W) -> (B, n, C*H*W)
    batch_size = 50
    scores, sampling = [], 0.0
    with sampler.batches(batch_size, num_batches=-(-args.episodes // batch_size)) as batches:
        t0 = time.perf_counter()
        for batch in batches:
            sampling += time.perf_counter() - t0
            dist = mr.ops.prototype_distances(flat(batch.support_x), batch.support_y,
                                              flat(batch.query_x), args.ways)
            scores.append((dist.argmin(-1) == batch.query_y).double().mean(1))
            t0 = time.perf_counter()
    correct = torch.cat(scores)[: args.episodes].numpy()
    print(f"sampler: {len(correct)} episodes ({args.ways}-way {args.shots}-shot, 15 queries), "
          f"{len(correct) / max(sampling, 1e-9):,.0f} episodes/s seen by the consumer")
    mean, ci = correct.mean(), 1.96 * correct.std(ddof=1) / np.sqrt(len(correct))
    print(f"raw-pixel prototype classifier: accuracy {100 * mean:.2f}% ± {100 * ci:.2f}% "
          f"(95% CI, {len(correct)} episodes; chance {100 / args.ways:.0f}%)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metarobust", description="Robust few-shot meta-learning (Rust core, PyTorch).")
    parser.add_argument("--version", action="version", version=f"metarobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    q = sub.add_parser("quickstart", help="the main job on the embedded glyph data")
    q.add_argument("--ways", type=int, default=5)
    q.add_argument("--shots", type=int, default=1)
    q.add_argument("--episodes", type=int, default=600)
    q.add_argument("--classes", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=quickstart)
    add_data_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"metarobust: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
