"""Training on data and a backbone of one's own: Trainer(cfg, out, dataset=..., model=...,
val_dataset=...), model="module.path:factory" in the config and on the command line, and
load_run of such runs."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import metarobust as mr
from metarobust.cli import main
from metarobust.config import TrainConfig
from metarobust.train import Trainer, load_run

SIDE = 8


def arrays(seed: int, classes: int = 12, per_class: int = 6):
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (classes, 1, SIDE, SIDE))
    noise = rng.normal(0, 30, (classes * per_class, 1, SIDE, SIDE))
    images = np.clip(protos.repeat(per_class, 0) + noise, 0, 255).astype(np.uint8)
    return images, np.repeat(np.arange(classes), per_class)


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * SIDE * SIDE, 8))


def cfg(learner: str = "protonet", **kw) -> TrainConfig:
    return TrainConfig(**{"learner": learner, "image_size": SIDE, "ways": 3, "shots": 1,
                          "queries": 2, "test_queries": 2, "episodes": 6, "val_every": 3,
                          "val_episodes": 4, "device": "cpu", "seed": 1,
                          **({"meta_batch": 2} if learner != "protonet" else {}), **kw})


def task():
    ep = mr.EpisodeSampler(arrays(9), ways=3, shots=1, queries=2, seed=4).sample(0)
    return ep.support_x, ep.support_y, ep.query_x


@pytest.mark.parametrize("learner", ["protonet", "fomaml"])
def test_a_users_backbone_and_data_train_and_reload(tmp_path, learner):
    torch.manual_seed(0)
    backbone = net()
    start = [p.detach().clone() for p in backbone.parameters()]
    trainer = Trainer(cfg(learner), tmp_path, progress=False, dataset=arrays(0),
                      val_dataset=mr.data.ImageDataset(*arrays(1)), model=backbone)
    assert trainer.train_set.images.shape == (72, 1, SIDE, SIDE)
    result = trainer.fit()
    assert result["steps"] == (6 if learner == "protonet" else 3)
    assert result["best_val_accuracy"] is not None  # validated on val_dataset
    assert any(not torch.equal(a, b) for a, b in zip(start, backbone.parameters()))
    assert 'model = "object:torch.nn.modules.container.Sequential"' in \
        (tmp_path / "config.toml").read_text()
    with pytest.raises(ValueError, match=r"model: the run was trained with a backbone object "
                                         r"\(torch.nn.modules.container.Sequential\).*"
                                         r"load_run\(run_dir, model=backbone\)"):
        load_run(tmp_path)
    loaded = load_run(tmp_path, "last", model=net())
    trainer.learner.eval()
    torch.testing.assert_close(loaded.predict(*task()), trainer.learner.predict(*task()))


def test_an_unset_image_size_is_the_given_datas(tmp_path):
    trainer = Trainer(cfg(image_size=None), tmp_path, progress=False, dataset=arrays(0),
                      model=net())
    assert trainer.cfg.image_size == SIDE
    trainer.fit()
    assert f"image_size = {SIDE}" in (tmp_path / "config.toml").read_text()
    # not square: the size cannot be taken from the data, and the check says so
    wide = np.zeros((12, 1, SIDE, SIDE + 2), np.uint8), np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match=f"dataset: images of {SIDE}x{SIDE + 2} pixels"):
        Trainer(cfg(image_size=None), tmp_path / "wide", dataset=wide)


def test_dataset_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="dataset: images of 8x8 pixels, the config's "
                                         "image_size is 28"):
        Trainer(cfg(image_size=28), tmp_path, dataset=arrays(0))
    with pytest.raises(TypeError, match="val_dataset: expected an ImageDataset or"):
        Trainer(cfg(), tmp_path, dataset=arrays(0), val_dataset="val")
    with pytest.raises(TypeError, match="model: expected an nn.Module backbone, got str"):
        Trainer(cfg(), tmp_path, model="conv4_mini")
    with pytest.raises(ValueError, match="model: a backbone object is given and the config"):
        Trainer(cfg(model="conv4_mini"), tmp_path, model=net())
    with pytest.raises(ValueError, match="dataset: sinusoid regression draws its tasks"):
        Trainer(TrainConfig(learner="maml", dataset="sinusoid", episodes=2, device="cpu"),
                tmp_path, dataset=arrays(0))


FACTORY = """
    from torch import nn

    def make(in_channels, image_size):
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * image_size * image_size, 8))

    def bare():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "my_backbones.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.chdir(src)  # found in the current directory, as `metarobust train` would
    yield "my_backbones"
    sys.modules.pop("my_backbones", None)


@pytest.mark.parametrize("learner,factory", [("protonet", "make"), ("maml", "bare")])
def test_a_factory_on_the_command_line_is_recorded_and_rebuilt(tmp_path, user_module,
                                                               learner, factory, capsys):
    out = tmp_path / "run"
    args = ["train", "--learner", learner, "--model", f"{user_module}:{factory}",
            "--image-size", str(SIDE), "--ways", "3", "--shots", "1", "--queries", "2",
            "--test-queries", "2", "--episodes", "4", "--val-every", "2", "--val-episodes",
            "3", "--glyph-classes", "20", "--device", "cpu", "--out", str(out)]
    if learner == "maml":
        args += ["--meta-batch", "2"]
    assert main(args) == 0
    assert f'model = "{user_module}:{factory}"' in (out / "config.toml").read_text()
    first, again = load_run(out), load_run(out)
    state = torch.load(out / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(first.state_dict()[k], v) for k, v in state.items())
    torch.testing.assert_close(first.predict(*task()), again.predict(*task()), rtol=0, atol=0)


def test_factory_names_are_checked(tmp_path, user_module):
    with pytest.raises(ValueError, match="model: expected one of .* or 'module.path:factory'"):
        TrainConfig(model="not a name", episodes=1).check()
    with pytest.raises(ValueError, match="model: cannot import module 'no_such_mod'"):
        Trainer(cfg(model="no_such_mod:make"), tmp_path / "a")
    with pytest.raises(ValueError, match="model: module 'my_backbones' has no 'nope'"):
        Trainer(cfg(model=f"{user_module}:nope"), tmp_path / "b")
    with pytest.raises(TypeError, match="model: 'my_backbones:FACTORY' is a str"):
        (tmp_path / "src" / "my_backbones.py").write_text("FACTORY = 'x'\n")
        sys.modules.pop("my_backbones", None)
        Trainer(cfg(model=f"{user_module}:FACTORY"), tmp_path / "c")


def test_a_factory_in_the_config_reloads_to_the_trained_predictions(tmp_path, user_module):
    trainer = Trainer(cfg(model=f"{user_module}:make"), tmp_path, progress=False,
                      dataset=arrays(0))
    trainer.fit()
    trainer.learner.eval()
    loaded = load_run(tmp_path)
    assert type(loaded.backbone).__name__ == "Sequential"
    torch.testing.assert_close(loaded.predict(*task()), trainer.learner.predict(*task()),
                               rtol=0, atol=0)
