"""A sanity check of the transfer learners' test-time heads on Omniglot: one Conv-4
backbone pre-trained briefly as a linear classifier over the 964 background characters
(plain loop here, not the Trainer's pre-training mode; SimpleShot's base mean fed as it
goes), then every head on the same 5-way 1-shot test episodes of the evaluation
alphabets. Prints a Markdown table (accuracy ± 95% CI over the episodes, seconds).

    METAROBUST_DATA=... PYTHONPATH=python python benches/transfer_omniglot_sanity.py \
        [--steps 200] [--episodes 100] [--threads 2]

Meta-Baseline is evaluated without its episodic stage (its start: the cosine prototype
classifier with temperature 10).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

import metarobust as mr
from metarobust.learners import TIM, BaselinePP, MetaBaseline, ProtoNet, SimpleShot
from metarobust.models import build_model


def pretrain(root: str, steps: int) -> SimpleShot:
    bg = mr.data.omniglot(root, split="background", image_size=28)
    torch.manual_seed(0)
    learner = SimpleShot(build_model("conv4_snell", 1, 28))
    head = torch.nn.Linear(64, bg.num_classes)
    opt = torch.optim.Adam([*learner.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.from_numpy(bg.images), torch.from_numpy(bg.labels)
    g = torch.Generator().manual_seed(0)
    learner.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=g)
        f = learner.embed(x[idx])
        loss = F.cross_entropy(head(f), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        learner.observe_base_features(f.detach())
    print(f"pre-training: {steps} steps of 128 images, last loss {float(loss.detach()):.3f}")
    return learner.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = os.environ["METAROBUST_DATA"]
    simpleshot = pretrain(root, args.steps)
    net = simpleshot.backbone
    ev = mr.data.omniglot(root, split="evaluation", image_size=28)
    batch = mr.EpisodeSampler(ev, ways=5, shots=1, queries=15, seed=0).sample_batch(
        0, args.episodes)
    learners = {"ProtoNet": ProtoNet(net), "SimpleShot (base)": simpleshot,
                "SimpleShot (none)": SimpleShot(net, centering="none"),
                "Baseline++": BaselinePP(net), "Baseline++ (full batch)":
                BaselinePP(net, batch_size=None), "Meta-Baseline (no meta stage)":
                MetaBaseline(net), "TIM-GD": TIM(net), "TIM-GD, 0 iterations":
                TIM(net, iterations=0)}
    print("| head | 5-way 1-shot | seconds |\n|---|---|---|")
    for name, lrn in learners.items():
        lrn.eval()
        t0 = time.perf_counter()
        acc = lrn.evaluate_batch(batch, 5).double()
        ci = 1.96 * float(acc.std()) / len(acc) ** 0.5
        print(f"| {name} | {100 * float(acc.mean()):.2f} ± {100 * ci:.2f} | "
              f"{time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main()
