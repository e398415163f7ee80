"""A robustness evaluation of your own model: label noise, corruptions, attacks, side by
side with robust prototypes, written as a report (JSON, CSV, PNG).

    python examples/robustness_eval.py [--run RUN_DIR] [--episodes 200] [--out reports/own]

With --run, the learner of a `metarobust train` run is evaluated; without it, a ProtoNet
is trained briefly on the embedded glyphs first. Every cell uses the same test episodes,
so rows and runs are paired.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

import metarobust as mr
from metarobust.robust import format_table, run_suite, write_report

GRID = {
    "clean": [0],
    "label_noise_symmetric": [0.2, 0.4],   # rate: a fraction of the support set
    "gaussian_noise": [0.1, 0.2],          # pixel std, images in [0, 1]
    "corruption:gaussian_blur": [1, 3],    # severity 1-5
    "fgsm": [4 / 255, 8 / 255],            # L-inf eps
}


def quick_learner(steps: int) -> mr.learners.ProtoNet:
    data = mr.data.glyphs(num_classes=100, per_class=20, seed=0, split="train")
    sampler = mr.EpisodeSampler(data, ways=5, shots=1, queries=5, seed=0)
    learner = mr.learners.ProtoNet(mr.models.build_model("conv4_snell"))
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    learner.train()
    for step in range(steps):
        ep = sampler.sample(step)
        loss = F.cross_entropy(learner(ep.support_x, ep.support_y, ep.query_x), ep.query_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return learner.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", help="a `metarobust train` run directory (default: train one)")
    p.add_argument("--steps", type=int, default=500, help="training steps without --run")
    p.add_argument("--episodes", type=int, default=200, help="test episodes per cell")
    p.add_argument("--out", default="reports/own", help="where the report goes")
    args = p.parse_args(argv)

    learner = mr.load_run(args.run) if args.run else quick_learner(args.steps)
    test = mr.data.glyphs(num_classes=100, per_class=20, seed=0, split="test")
    common = dict(ways=5, shots=5, grid=GRID, episodes=args.episodes, progress=False)
    mean = run_suite(learner, test, run="mean prototypes", **common)
    # the same network with robust prototypes: no retraining
    robust = copy.deepcopy(learner)
    robust.prototype = "filtered_mean"
    filtered = run_suite(robust, test, run="filtered-mean prototypes", **common)

    print(format_table([mean, filtered]))
    paths = write_report(mean, args.out, compare=[filtered])
    print("report:", paths)


if __name__ == "__main__":
    main()
