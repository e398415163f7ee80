"""Gaussian noise training (config noise_train, metarobust train --noise-train): the
training queries get N(0, sigma^2) noise, clipped to [0, 1], from the run's seed and the
step; the support set is untouched; bad values named."""

from __future__ import annotations

import pytest
import torch

from metarobust.config import TrainConfig
from metarobust.learners.base import Task
from metarobust.robust.certify import noisy_queries
from metarobust.train import Trainer


def test_noisy_queries_statistics_clip_and_determinism():
    x = torch.full((2, 400, 1, 8, 8), 0.5)
    batch = Task(x.clone(), torch.zeros(2, 400), x.clone(), None)
    out = noisy_queries(batch, 0.1, seed=3)
    noise = out.query_x - x
    assert abs(float(noise.mean())) < 0.005 and abs(float(noise.std()) - 0.1) < 0.005
    assert torch.equal(out.support_x, x)  # the support set is left alone
    assert torch.equal(noisy_queries(batch, 0.1, seed=3).query_x, out.query_x)
    assert not torch.equal(noisy_queries(batch, 0.1, seed=4).query_x, out.query_x)
    wide = noisy_queries(batch, 5.0, seed=0).query_x
    assert float(wide.min()) == 0.0 and float(wide.max()) == 1.0
    as_uint8 = Task(x, None, torch.full((1, 3, 1, 2, 2), 255, dtype=torch.uint8), None)
    assert noisy_queries(as_uint8, 1e-9, seed=0).query_x.dtype == torch.float32


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(learner="protonet", dataset="glyphs", model="conv4_mini", image_size=16,
                       glyph_classes=20, ways=3, shots=1, queries=2, test_queries=2, steps=3,
                       val_every=10**6, val_episodes=2, device="cpu", seed=5, **kw)


def test_noise_training_changes_the_steps_and_is_recorded(tmp_path):
    params = []
    for name, kw in (("plain", {}), ("noisy", {"noise_train": 0.25}),
                     ("noisy_again", {"noise_train": 0.25})):
        trainer = Trainer(_cfg(**kw), tmp_path / name, progress=False)
        trainer.fit()
        params.append(torch.cat([p.detach().flatten() for p in trainer.learner.parameters()]))
    assert not torch.equal(params[0], params[1])
    assert torch.equal(params[1], params[2])  # a pure function of the seed
    assert "noise_train = 0.25" in (tmp_path / "noisy" / "config.toml").read_text()


@pytest.mark.parametrize("value,err", [(0.0, ValueError), (-1.0, ValueError),
                                       (float("inf"), ValueError), ("0.25", TypeError)])
def test_bad_noise_train_is_named(value, err):
    with pytest.raises(err, match="noise_train"):
        _cfg(noise_train=value).check()
    with pytest.raises(ValueError, match="noise_train: Gaussian noise training perturbs images"):
        TrainConfig(learner="maml", dataset="sinusoid", steps=1, noise_train=0.1).check()
