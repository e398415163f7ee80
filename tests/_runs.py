"""Tiny runs shared by the tests: the small glyph ProtoNet config of the trainer, config and
checkpoint tests."""

from __future__ import annotations

from metarobust.config import TrainConfig

TINY = dict(learner="protonet", dataset="glyphs", glyph_classes=30, ways=5, shots=1, queries=3,
            val_every=4, val_episodes=10, test_queries=3, checkpoint_every=3, device="cpu",
            seed=3)


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "episodes": 8, **kw})
