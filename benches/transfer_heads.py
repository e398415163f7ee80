"""Forward time of the transfer learners on Omniglot-size tasks: one evaluation forward
(``query_logits``) of SimpleShot, Baseline++, Meta-Baseline and TIM-GD with their default
options, beside ProtoNet and the backbone alone, on the same episodes, in one process.

    METAROBUST_DATA=... PYTHONPATH=python python benches/transfer_heads.py \
        [--threads 1] [--repeats 5] [--batch 16]

Backbone: ``conv4_snell`` (Conv-4 with pooling, D = 64 on 28x28 inputs), freshly
initialised, eval mode (the heads' cost does not depend on the weights). Episodes: 5-way
1-shot and 5-way 5-shot with 15 queries per class from the Omniglot evaluation alphabets
(28x28; the embedded glyphs when ``METAROBUST_DATA`` is unset). Rows: seconds per task for
a batch of one task and per task for a batch of ``--batch`` tasks (the heads fit all the
tasks of a chunk at once); medians of interleaved rounds (``bench.timing.measure``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable
from typing import Any

import torch

import metarobust as mr
from metarobust.bench.timing import measure
from metarobust.learners import TIM, BaselinePP, MetaBaseline, ProtoNet, SimpleShot
from metarobust.models import build_model


def dataset() -> tuple[Any, str]:
    root = os.environ.get("METAROBUST_DATA")
    if root:
        return mr.data.omniglot(root, split="evaluation", image_size=28), "omniglot evaluation"
    return mr.data.glyphs(num_classes=100, per_class=20, image_size=28, seed=0), "glyphs"


def candidates(batch: Any) -> dict[str, Callable[[], Any]]:
    torch.manual_seed(0)
    net = build_model("conv4_snell", 1, 28).eval()
    learners = {"protonet": ProtoNet(net), "simpleshot": SimpleShot(net),
                "baseline_pp": BaselinePP(net), "meta_baseline": MetaBaseline(net),
                "tim": TIM(net)}
    for lrn in learners.values():
        lrn.eval()
    items = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
    out: dict[str, Callable[[], Any]] = {}
    with torch.no_grad():
        out["backbone alone"] = lambda: learners["simpleshot"].embed(items)
    for name, lrn in learners.items():
        out[name] = lambda lrn=lrn: lrn.query_logits(batch, 5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds, source = dataset()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {source}, conv4_snell (D=64)")
    print("| learner | shots | s/task, batch of 1 | s/task, batch of "
          f"{args.batch} |")
    print("|---|---|---|---|")
    for shots in (1, 5):
        sampler = mr.EpisodeSampler(ds, ways=5, shots=shots, queries=15, seed=0)
        rows: dict[str, list[float]] = {}
        for b in (1, args.batch):
            with torch.no_grad():
                times = measure(candidates(sampler.sample_batch(0, b)), repeats=args.repeats,
                                min_time=0.3)
            for name, t in times.items():
                rows.setdefault(name, []).append(statistics.median(t) / b)
        for name, (one, many) in rows.items():
            print(f"| {name} | {shots} | {one:.4f} | {many:.4f} |")


if __name__ == "__main__":
    main()
