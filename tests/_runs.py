"""Tiny runs shared by the tests: the small glyph ProtoNet config of the trainer, config and
checkpoint tests, and the trained glyph runs and suite call of the robustness tests (the
``runs`` fixture in conftest.py trains two of them)."""

from __future__ import annotations

from pathlib import Path

from metarobust.config import TrainConfig
from metarobust.robust import run_suite
from metarobust.train import Trainer, load_dataset, load_run

# ---------------------------------------------------------------- a small glyph config

TINY = dict(learner="protonet", dataset="glyphs", glyph_classes=30, ways=5, shots=1, queries=3,
            val_every=4, val_episodes=10, test_queries=3, checkpoint_every=3, device="cpu",
            seed=3)


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "episodes": 8, **kw})


# ---------------------------------------------------------------- robustness suite runs

GRID = {
    "clean": [0],
    "label_noise_symmetric": [0, 0.5],
    "label_noise_paired": [1.0],
    "label_noise_outlier": [0.5],
    "gaussian_noise": [0.2],
    "fgsm": [8 / 255],
    "pgd": [8 / 255],
    "pgd_support": [8 / 255],
    "domain_shift:glyphs": [0],
}
EPISODES = 6


def train_glyph_run(out: Path, seed: int) -> Path:
    cfg = TrainConfig(learner="protonet", dataset="glyphs", model="conv4_mini", image_size=16,
                      glyph_classes=30, ways=5, shots=1, queries=3, test_queries=3,
                      episodes=4, val_every=10**6, val_episodes=4, device="cpu", seed=seed)
    Trainer(cfg, out, progress=False).fit()
    return out


def tiny_suite(run: Path, grid=GRID, **kw):
    learner = load_run(run)
    cfg = learner.config
    ds = load_dataset(cfg, "test", "test")
    kw = {"episodes": EPISODES, "pgd_steps": 2, "progress": False, "source": "glyphs", **kw}
    return run_suite(learner, ds, ways=cfg.test_ways, shots=cfg.test_shots,
                     queries=cfg.test_queries, grid=grid, run=str(run), **kw)
