"""Evaluation: mean query accuracy over episodes with a 95% confidence interval.

``ci95 = 1.96 * std / sqrt(n)`` over per-episode accuracies (sample standard deviation),
the convention of the few-shot literature.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% half-width of per-episode values."""
    v = values.double().flatten()
    if v.numel() == 0:
        raise ValueError("values: need at least one episode")
    ci = 1.96 * float(v.std(unbiased=True)) / math.sqrt(v.numel()) if v.numel() > 1 else 0.0
    return float(v.mean()), ci


def evaluate(learner: Any, sampler: Any, episodes: int = 600, batch_size: int = 50,
             device: torch.device | str = "cpu", start: int = 0,
             progress: bool = True) -> dict[str, Any]:
    """Accuracy of ``learner`` on episodes ``start .. start + episodes`` of ``sampler``.

    Returns ``{"accuracy", "ci95", "episodes", "ways", "shots", "queries"}``.
    """
    if episodes < 1:
        raise ValueError(f"episodes: must be >= 1, got {episodes}")
    batch_size = max(1, min(batch_size, episodes))
    was_training = learner.training
    learner.eval()
    accs = []
    n_batches = math.ceil(episodes / batch_size)
    bar = tqdm(total=episodes, desc="eval", unit="ep", disable=None if progress else True,
               leave=False)
    try:
        with sampler.batches(batch_size, start=start, num_batches=n_batches,
                             pin_memory=torch.device(device).type == "cuda") as it:
            for batch in it:
                acc = learner.evaluate_batch(batch.to(device, non_blocking=True), sampler.ways)
                accs.append(acc.detach().float().cpu())
                bar.update(len(acc))
    finally:
        bar.close()
        learner.train(was_training)
    acc = torch.cat(accs)[:episodes]
    mean, ci = mean_ci95(acc)
    return {"accuracy": mean, "ci95": ci, "episodes": int(acc.numel()), "ways": sampler.ways,
            "shots": sampler.shots, "queries": sampler.queries}
