"""metarobust.evaluate: the mean and its 95% interval, and regression evaluation against a
direct loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metarobust as mr
from metarobust.config import TrainConfig
from metarobust.evaluate import mean_ci95
from metarobust.train import Trainer


def test_mean_ci95_against_numpy():
    rng = np.random.default_rng(0)
    v = rng.uniform(size=600)
    mean, ci = mean_ci95(torch.from_numpy(v))
    assert math.isclose(mean, v.mean())
    assert math.isclose(ci, 1.96 * v.std(ddof=1) / math.sqrt(600))
    with pytest.raises(ValueError, match="at least one"):
        mean_ci95(torch.zeros(0))


def test_evaluate_regression_matches_a_direct_loop(tmp_path):
    cfg = TrainConfig(learner="fomaml", dataset="sinusoid", shots=5, queries=10, meta_batch=4,
                      inner_lr=0.01, episodes=8, device="cpu")
    learner = Trainer(cfg, tmp_path / "run", progress=False).learner
    tasks = mr.data.sinusoid(shots=5, queries=10, seed=7)
    res = mr.evaluate.evaluate_regression(learner, tasks, episodes=6, batch_size=4, steps=(2,))
    direct = []
    learner.test_inner_steps = 2
    for i in range(6):
        one = tasks.sample_batch(i, 1)
        direct.append(float(learner.evaluate_batch(one, None)[0]))
    assert math.isclose(res["mse_by_steps"]["2"], float(np.mean(direct)), rel_tol=1e-5)
