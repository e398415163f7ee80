"""`metarobust data prepare` (metarobust.cli.data): an IDX pair prepared into a dataset cache;
a missing --labels refused with exit status 2; the benchmark kinds (miniImageNet, CUB) prepared
into caches equal to their readers' result, their bad flag combinations refused."""

from __future__ import annotations

import argparse
import gzip
import struct

import numpy as np
import pytest

from metarobust.cli.data import add_parser as add_data_parser
from metarobust.data.dataset import load


def test_prepare_idx_command(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, 3, 3), dtype=np.uint8)
    (tmp_path / "img.gz").write_bytes(
        gzip.compress(struct.pack(">IIII", 0x803, 6, 3, 3) + pixels.tobytes())
    )
    (tmp_path / "lab").write_bytes(struct.pack(">II", 0x801, 6) + bytes([4, 9, 4, 9, 4, 1]))
    parser = argparse.ArgumentParser(prog="metarobust")
    add_data_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cache"
    args = parser.parse_args(
        [
            "data",
            "prepare",
            "idx",
            "--images",
            str(tmp_path / "img.gz"),
            "--labels",
            str(tmp_path / "lab"),
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    assert "6 images" in capsys.readouterr().out
    ds = load(out)
    np.testing.assert_array_equal(ds.images[:, 0], pixels)
    assert ds.class_names == ["1", "4", "9"] and ds.labels.tolist() == [1, 2, 1, 2, 1, 0]

    bad = parser.parse_args(["data", "prepare", "idx", "--images", "x", "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        bad.func(bad)
    assert exc.value.code == 2
    assert "--labels" in capsys.readouterr().err


def _parser():
    parser = argparse.ArgumentParser(prog="metarobust")
    add_data_parser(parser.add_subparsers(dest="command"))
    return parser


def test_prepare_benchmark_kinds(tmp_path, capsys):
    """A miniImageNet cache pickle and a CUB tree prepared into caches equal to the readers'
    own result; a read that fails leaves no cache behind."""
    import pickle

    from PIL import Image

    from metarobust.data import cub, mini_imagenet

    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (4, 84, 84, 3), dtype=np.uint8)
    with open(tmp_path / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"image_data": data, "class_dict": {"n02091244": [1, 3],
                                                        "n01855672": [0, 2]}}, f)
    out = tmp_path / "mini"
    args = _parser().parse_args(["data", "prepare", "mini_imagenet", "--root", str(tmp_path),
                                 "--split", "val", "--out", str(out)])
    assert args.func(args) == 0 and "4 images of 3x84x84, 2 classes" in capsys.readouterr().out
    ds, ref = load(out), mini_imagenet(tmp_path, "val")
    np.testing.assert_array_equal(ds.images, ref.images)
    np.testing.assert_array_equal(ds.images[0], data[0].transpose(2, 0, 1))
    assert ds.class_names == ["n01855672", "n02091244"] and ds.labels.tolist() == [0, 0, 1, 1]

    folder = tmp_path / "CUB_200_2011"
    (folder / "images" / "001.A").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(
        folder / "images" / "001.A" / "a.jpg")
    (folder / "classes.txt").write_text("1 001.A\n2 002.B\n")
    (folder / "images.txt").write_text("1 001.A/a.jpg\n")
    (folder / "image_class_labels.txt").write_text("1 1\n")
    (folder / "bounding_boxes.txt").write_text("1 3.5 4 20 12.5\n")
    out = tmp_path / "cub"
    args = _parser().parse_args(["data", "prepare", "cub", "--root", str(tmp_path), "--crop",
                                 "--image-size", "16", "--no-progress", "--out", str(out)])
    assert args.func(args) == 0
    ref = cub(tmp_path, "train", image_size=16, crop=True, progress=False)
    np.testing.assert_array_equal(load(out).images, ref.images)

    (folder / "images.txt").write_text("1 001.A/missing.jpg\n")
    failed = tmp_path / "failed"
    args = _parser().parse_args(["data", "prepare", "cub", "--root", str(tmp_path),
                                 "--no-progress", "--out", str(failed)])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        args.func(args)
    assert not failed.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("argv, message", [
    (["cifar_fs", "--root", "r", "--split", "novel"], "--split must be train, val or test"),
    (["fc100", "--split", "val"], "fc100 needs --root"),
    (["tiered_imagenet", "--root", "r", "--grayscale"], "does not take --grayscale"),
    (["mini_imagenet", "--root", "r", "--crop"], "--crop is for cub only"),
    (["cub", "--root", "r", "--rotations"], "does not take --rotations"),
])
def test_prepare_benchmark_flag_errors(tmp_path, capsys, argv, message):
    args = _parser().parse_args(["data", "prepare", *argv, "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exc:
        args.func(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
