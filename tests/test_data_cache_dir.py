"""Caches read by the commands: `metarobust data prepare` output taken by train/eval as
`--data-root` (one cache, or sub-caches by split), METAROBUST_DATA honoured by train and
eval as by robustness and bench, and one default image size per dataset kind everywhere."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from PIL import Image

import metarobust as mr
from metarobust import cli
from metarobust.config import TrainConfig
from metarobust.train import load_dataset

TRAIN = ["--learner", "protonet", "--model", "conv4_mini", "--ways", "3", "--shots", "1",
         "--queries", "2", "--test-queries", "2", "--episodes", "2", "--val-every", "1000",
         "--device", "cpu"]


@pytest.fixture
def folder(tmp_path):
    """A small image tree: 8 classes x 5 RGB images of 12x10."""
    rng = np.random.default_rng(0)
    root = tmp_path / "tree"
    for c in range(8):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(
                root / f"c{c}" / f"{i}.png")
    return root


def _prepare(folder, out, size="16"):
    assert cli.main(["data", "prepare", "folder", "--root", str(folder), "--image-size", size,
                     "--no-progress", "--out", str(out)]) == 0


def test_train_and_eval_read_a_prepared_cache(folder, tmp_path, capsys):
    """Observed problem: `--data-root CACHE` gave "no set 'background'"."""
    cache = tmp_path / "cache"
    _prepare(folder, cache)
    run = tmp_path / "run"
    # the dataset kind it was prepared from, or "cache": both read the cache
    assert cli.main(["train", "--dataset", "folder", "--data-root", str(cache), *TRAIN,
                     "--out", str(run)]) == 0
    capsys.readouterr()
    cfg = mr.load_run(run).config
    assert cfg.image_size == 16  # the cache's own size, not a default
    assert cli.main(["eval", str(run), "--data-root", str(cache), "--episodes", "3"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 3 and 0 <= out["accuracy"] <= 1
    assert cli.main(["train", "--dataset", "cache", "--data-root", str(cache), *TRAIN,
                     "--out", str(tmp_path / "run2")]) == 0


def test_split_sub_caches_and_errors(folder, tmp_path):
    root = tmp_path / "caches"
    _prepare(folder, root / "train")
    ds = mr.data.load(root / "train")
    ds.subset([0, 1, 2, 3]).save(root / "test")
    cfg = TrainConfig(dataset="cache", data_root=str(root))
    assert len(load_dataset(cfg, None, "train")) == 40
    assert load_dataset(cfg, None, "test").num_classes == 4
    assert load_dataset(cfg, "test", "train").num_classes == 4
    with pytest.raises(FileNotFoundError, match=r"no dataset cache for split 'val'.*"
                                                r"\['test', 'train'\]"):
        load_dataset(cfg, "val", "val")
    with pytest.raises(ValueError, match="image_size: the cache .* holds 16x16 images, not "
                                         "28x28"):
        load_dataset(TrainConfig(dataset="cache", data_root=str(root), image_size=28), None,
                     "train")
    with pytest.raises(FileNotFoundError, match="is not a cache"):
        load_dataset(TrainConfig(dataset="cache", data_root=str(folder)), None, "train")


def test_train_and_eval_honour_metarobust_data(folder, tmp_path, monkeypatch, capsys):
    """Observed problem: METAROBUST_DATA was read by robustness and bench only."""
    cache = tmp_path / "cache"
    _prepare(folder, cache)
    monkeypatch.setenv("METAROBUST_DATA", str(cache))
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "cache", *TRAIN, "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 2
    assert mr.data.resolve_data_root(None) == str(cache)
    assert mr.data.resolve_data_root("elsewhere") == "elsewhere"
    monkeypatch.delenv("METAROBUST_DATA")
    with pytest.raises(ValueError, match="data_root: dataset 'cache' needs --data-root .*"
                                         "METAROBUST_DATA"):
        TrainConfig(dataset="cache", episodes=2).check()


def test_one_default_image_size_per_dataset_kind(folder):
    """Observed problem: a folder dataset was 28 px in train and 84 in image_folder() and
    data prepare."""
    sizes = mr.data.IMAGE_SIZES
    folder_default = inspect.signature(mr.data.image_folder).parameters["image_size"].default
    omniglot_default = inspect.signature(mr.data.omniglot).parameters["image_size"].default
    assert sizes["folder"] == folder_default == 84
    assert sizes["omniglot"] == omniglot_default == 28
    for reader in ("mini_imagenet", "tiered_imagenet", "cub", "cifar_fs", "fc100"):
        parameters = inspect.signature(getattr(mr.data, reader)).parameters
        assert parameters["image_size"].default == sizes[reader], reader
    for kind in ("folder", "omniglot", "glyphs"):
        assert TrainConfig(dataset=kind, data_root=str(folder)).resolved().image_size == \
            sizes[kind]
    assert load_dataset(TrainConfig(dataset="folder", data_root=str(folder)).resolved(), None,
                        "train").image_shape == (3, 84, 84)


def test_split_caches_through_train_eval_and_robustness(folder, tmp_path, capsys):
    root = tmp_path / "caches"
    _prepare(folder, root / "train")
    mr.data.load(root / "train").subset([4, 5, 6, 7]).save(root / "test")
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "cache", "--data-root", str(root), *TRAIN,
                     "--out", str(run)]) == 0
    capsys.readouterr()
    # a run of another kind (omniglot's test split is "evaluation") finds the test cache
    from metarobust.cli._common import eval_split

    assert eval_split("omniglot", None, str(root)) is None
    assert eval_split("omniglot", None, str(folder)) == "evaluation"
    assert cli.main(["eval", str(run), "--ways", "4", "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 2
    out = tmp_path / "robust"
    assert cli.main(["robustness", str(run), "--dataset", "cache", "--data-root", str(root),
                     "--suite", "quick", "--families", "clean", "--episodes", "2", "--ways", "4",
                     "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [r["family"] for r in rows] == ["clean"] and rows[0]["episodes"] == 2


def test_an_omniglot_cache_is_trained_on_as_prepared(tmp_path):
    """Rotated classes are the cache's business: not added by default, refused if asked."""
    glyphs = mr.data.glyphs(num_classes=6, per_class=4, image_size=12, seed=0)
    glyphs.save(tmp_path / "bg")
    cfg = TrainConfig(dataset="omniglot", data_root=str(tmp_path / "bg")).resolved()
    assert cfg.rotations is False and cfg.image_size == 12
    assert len(load_dataset(cfg, None, "train")) == 24
    with pytest.raises(ValueError, match="rotations: a cache holds its classes as prepared"):
        load_dataset(TrainConfig(dataset="omniglot", data_root=str(tmp_path / "bg"),
                                 rotations=True).resolved(), None, "train")
