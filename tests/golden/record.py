"""Fixed-seed outputs that a refactoring must leave as they are: episodes, every corruption,
label noise, augmentation, a 50-step training run's loss curve (plain, augmented and
adversarial) and a robustness suite's rows.

``python tests/golden/record.py`` rewrites ``values.json``: do that only when a change of
results is intended, and say why in the commit. ``tests/test_golden.py`` compares against it.

Changed on purpose since the first recording: ``training.protonet_adversarial``, when the
training attacks' seeds moved from ``seed * 1_000_003 + step`` (which passed 2**64 for large
seeds) to the ``ADVERSARIAL_TRAINING`` stream of :mod:`metarobust.seeds`; the suite's
label-noise rows, when the noise rate became a fraction of the whole support set (the old
per-class rate corrupted nothing at 1 shot below 0.5).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import metarobust as mr
from metarobust.config import TrainConfig
from metarobust.robust import Augment, apply_label_noise, corrupt, run_suite
from metarobust.train import Trainer, load_dataset, load_run

VALUES = Path(__file__).with_name("values.json")
TRAIN_STEPS = 50


def digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


def _episode_digest(ep: Any) -> str:
    return digest(ep.support_x, ep.support_y, ep.query_x, ep.query_y, ep.classes)


def episodes() -> dict[str, str]:
    ds = mr.data.glyphs(num_classes=40, per_class=20, image_size=28, seed=3)
    out = {}
    for dtype in ("uint8", "float32"):
        s = mr.EpisodeSampler(ds, ways=5, shots=2, queries=3, seed=11, dtype=dtype)
        out[f"sample_{dtype}"] = _episode_digest(s.sample(7))
        out[f"batch_{dtype}"] = _episode_digest(s.sample_batch(100, 6))
    s = mr.EpisodeSampler(ds, ways=4, shots=1, queries=2, seed=5, mean=0.5, std=0.25,
                          classes=list(range(0, 40, 2)))
    out["normalised_subset"] = _episode_digest(s.sample_batch(0, 3))
    for name in mr.robust.CORRUPTIONS:
        s = mr.EpisodeSampler(ds, ways=5, shots=1, queries=2, seed=2, dtype="uint8",
                              corruption=name, severity=4, corrupt="both")
        out[f"corrupted_{name}"] = _episode_digest(s.sample_batch(0, 4))
    return out


def corruptions() -> dict[str, str]:
    images = mr.data.glyphs(num_classes=4, per_class=2, image_size=28, seed=1).images
    out = {}
    for name in mr.robust.CORRUPTIONS:
        for severity in (1, 5):
            out[f"{name}_{severity}_uint8"] = digest(corrupt(images, name, severity, seed=9,
                                                             index=3))
        light = (images.astype(np.float32) / 255)[:, :, :20, :24].copy()
        out[f"{name}_3_float32_light"] = digest(corrupt(light, name, 3, seed=4, index=1,
                                                        ink="light"))
    return out


def perturbations() -> dict[str, str]:
    ds = mr.data.glyphs(num_classes=20, per_class=10, image_size=28, seed=0)
    batch = mr.EpisodeSampler(ds, ways=5, shots=4, queries=2, seed=0).sample_batch(0, 3)
    out = {}
    for kind in mr.robust.LABEL_NOISE_KINDS:
        kw = {"dataset": ds} if kind == "outlier" else {}
        noisy, counts = apply_label_noise(batch, kind, 0.5, seed=1, start=2, **kw)
        out[f"label_noise_{kind}"] = digest(noisy.support_x, noisy.support_y, counts)
    u8 = mr.EpisodeSampler(ds, ways=5, shots=1, queries=2, seed=0, dtype="uint8")
    aug = Augment(["gaussian_noise", "elastic", "rotate"], max_severity=3, prob=0.7, seed=5)
    out["augment"] = digest(*(aug(u8.sample_batch(4 * i, 4), 4 * i).query_x for i in range(3)))
    return out


def _config(**kw: Any) -> TrainConfig:
    base = dict(learner="protonet", dataset="glyphs", model="conv4_mini", image_size=16,
                glyph_classes=30, ways=5, shots=1, queries=3, test_queries=3,
                episodes=TRAIN_STEPS, val_every=10**6, val_episodes=4, device="cpu", seed=7,
                threads=1)
    return TrainConfig(**{**base, **kw})


def _loss_curve(cfg: TrainConfig, out: Path) -> list[float]:
    trainer = Trainer(cfg, out, progress=False)
    losses: list[float] = []
    step = trainer.learner.meta_backward

    def recorded(*args: Any, **kw: Any) -> Any:
        res = step(*args, **kw)
        losses.append(float(res["loss"]))
        return res

    trainer.learner.meta_backward = recorded
    trainer.fit()
    return losses


RUNS = {
    "protonet": {},
    "protonet_augmented": {"augment": "gaussian_noise,elastic", "augment_prob": 0.5},
    "protonet_adversarial": {"adversarial": True, "adv_steps": 2},
    "fomaml": {"learner": "fomaml", "model": "conv4_mini", "meta_batch": 2, "inner_steps": 1,
               "episodes": 2 * TRAIN_STEPS},
}


def training(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    torch.set_num_threads(1)
    for name, kw in RUNS.items():
        out[name] = _loss_curve(_config(**kw), tmp / name)
    return out


def suite(tmp: Path) -> list[dict[str, Any]]:
    learner = load_run(tmp / "protonet")
    ds = load_dataset(learner.config, "test", "test")
    grid = {"clean": [0], "label_noise_symmetric": [0.5], "label_noise_outlier": [0.5],
            "gaussian_noise": [0.2], "fgsm": [8 / 255], "pgd": [8 / 255],
            "pgd_support": [8 / 255], "corruption:elastic": [3]}
    res = run_suite(learner, ds, ways=5, shots=1, queries=3, grid=grid, episodes=6,
                    pgd_steps=2, progress=False, source="glyphs", seed=21, attack_batch_size=4)
    return [{k: r[k] for k in ("family", "setting", "strength", "accuracy", "ci95")}
            for r in res["rows"]]


def compute() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return {"episodes": episodes(), "corruptions": corruptions(),
                "perturbations": perturbations(), "training": training(Path(tmp)),
                "suite": suite(Path(tmp))}


if __name__ == "__main__":
    VALUES.write_text(json.dumps(compute(), indent=1) + "\n")
    print(f"wrote {VALUES}", file=sys.stderr)
