"""A trained transfer baseline against simpler heads on its own backbone, on the same
episodes: separates what the backbone gives from what the method's test-time head adds.

    METAROBUST_DATA=... python benches/transfer_runs_heads.py RUN_DIR [--episodes 300]
        [--seed 11] [--ways 5] [--shots 1] [--queries 15]

Heads: the run's learner as trained; ProtoNet's (squared Euclidean prototypes); TIM with
0 iterations (the nearest prototype on L2-normalised features); Baseline++ with 0
fine-tuning epochs (the cosine prototypes it starts from). Prints accuracy ± 95% CI.
"""

from __future__ import annotations

import argparse

import torch

from metarobust.episodes import EpisodeSampler
from metarobust.evaluate import evaluate
from metarobust.learners import TIM, BaselinePP, ProtoNet
from metarobust.train import load_dataset, load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)  # the heads' fits are many small operations
    learner = load_run(args.run)
    test = load_dataset(learner.config, None, "test")
    sampler = EpisodeSampler(test, ways=args.ways, shots=args.shots, queries=args.queries,
                             seed=args.seed)
    heads = {f"{learner.config.learner} (as trained)": learner,
             "protonet head": ProtoNet(learner.backbone),
             "tim, 0 iterations": TIM(learner.backbone, iterations=0),
             "baseline_pp, 0 epochs": BaselinePP(learner.backbone, finetune_epochs=0)}
    for name, head in heads.items():
        res = evaluate(head.eval(), sampler, args.episodes, progress=False)
        print(f"{name:28s} {100 * res['accuracy']:6.2f} ± {100 * res['ci95']:.2f}")


if __name__ == "__main__":
    main()
