"""Noise training with noise on the queries only, on support and queries (what
``--noise-train`` does) or none (experiments/noise_training.md)::

    METAROBUST_DATA=... python experiments/scripts/noise_training.py query|both|plain
"""

from __future__ import annotations

import json
import sys

import torch

import metarobust.train as train
from metarobust.config import TrainConfig
from metarobust.learners.base import replace_fields


def noisy_queries(batch, sigma: float, seed: int):
    """The first version: noise on the queries only."""
    x = batch.query_x.float()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen, device=x.device)
    return replace_fields(batch, query_x=(x + sigma * noise).clamp(0.0, 1.0))


def main(mode: str) -> None:
    if mode == "query":
        train.noisy_images = noisy_queries  # the trainer's step calls it by this name
    cfg = TrainConfig(learner="protonet", dataset="omniglot", ways=20, shots=1, queries=5,
                      steps=100, log_every=10, noise_train=None if mode == "plain" else 0.25,
                      device="cpu", seed=0)
    out = f"runs/noise_training/{mode}"
    train.Trainer(cfg, out, progress=False).fit()
    rows = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
    print(mode, [(r["step"], round(r["loss"], 2), round(r["accuracy"], 2))
                 for r in rows if "loss" in r])


if __name__ == "__main__":
    main(sys.argv[1])
