"""Domain-shift targets (metarobust.data.shift), called directly: the glyph test split,
Fashion-MNIST's t10k files (missing: the install command named; fake IDX files read, plain
and inverted), Omniglot's evaluation set and where its root comes from, unknown targets, and
fit_images' channel and size mapping against torch's interpolate.
(The suite's use of the targets: test_robust_suite.)"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from metarobust.data.glyphs import glyphs
from metarobust.data.shift import (
    FASHION_MNIST_INSTALL,
    MissingTarget,
    fit_images,
    omniglot_root,
    shift_target,
)


def write_t10k(root: Path, pixels: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Fashion-MNIST's t10k pair as IDX files (gzipped as the Debian package ships them)."""
    n, h, w = pixels.shape
    files = {"t10k-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, h, w) + pixels.tobytes(),
             "t10k-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels.tobytes()}
    for name, data in files.items():
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


# ---------------------------------------------------------------- glyphs


@pytest.mark.parametrize("size", [20, 28])
def test_glyphs_target_is_the_test_split(size):
    images, labels, desc = shift_target("glyphs", size)
    assert desc == "glyphs/test"
    assert images.dtype == np.uint8 and images.shape == (4000, 1, size, size)
    assert labels.dtype == np.int64 and labels.shape == (4000,)
    assert np.bincount(labels).tolist() == [20] * 200
    test = glyphs(num_classes=200, per_class=20, image_size=size, seed=0, split="test")
    np.testing.assert_array_equal(images, test.images)
    np.testing.assert_array_equal(labels, test.labels)
    train = glyphs(num_classes=200, per_class=20, image_size=size, seed=0, split="train")
    assert not np.array_equal(images, train.images)  # classes a learner has not seen


def test_unknown_target():
    with pytest.raises(ValueError, match="target: expected glyphs, omniglot, fashion_mnist"):
        shift_target("mars", 28)


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("target", ["fashion_mnist", "fashion_mnist_inverted"])
def test_missing_fashion_mnist_names_the_install_command(tmp_path, target):
    absent = tmp_path / "absent"
    with pytest.raises(MissingTarget) as err:
        shift_target(target, 28, fashion_mnist_root=absent)
    assert FASHION_MNIST_INSTALL == "apt-get install -y dataset-fashion-mnist"
    assert FASHION_MNIST_INSTALL in str(err.value) and str(absent) in str(err.value)
    assert isinstance(err.value, LookupError)
    # the labels alone are not enough
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 0))
    with pytest.raises(MissingTarget, match=FASHION_MNIST_INSTALL):
        shift_target(target, 28, fashion_mnist_root=tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_read_and_inverted(tmp_path, gz):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    write_t10k(tmp_path, pixels, np.array([9, 0, 3] * 4, np.uint8), gz)
    images, labels, desc = shift_target("fashion_mnist", 16, fashion_mnist_root=tmp_path)
    assert desc == "fashion_mnist/t10k"
    assert images.dtype == np.uint8 and images.shape == (12, 1, 28, 28)  # as read, not resized
    np.testing.assert_array_equal(images[:, 0], pixels)  # light on dark, as stored
    assert labels.tolist() == [2, 0, 1] * 4  # 0..k-1 in sorted order of the stored labels
    inv, inv_labels, inv_desc = shift_target("fashion_mnist_inverted", 16,
                                             fashion_mnist_root=tmp_path)
    assert inv_desc == "fashion_mnist/t10k, inverted"
    assert inv.dtype == np.uint8
    np.testing.assert_array_equal(inv[:, 0], 255 - pixels)
    np.testing.assert_array_equal(inv_labels, labels)


# ---------------------------------------------------------------- Omniglot


def test_omniglot_root_prefers_the_argument_then_the_environment(tmp_path, monkeypatch):
    arg, env = tmp_path / "arg", tmp_path / "env"
    arg.mkdir()
    env.mkdir()
    monkeypatch.setenv("METAROBUST_DATA", str(env))
    assert omniglot_root(arg) == str(arg)
    assert omniglot_root(str(arg)) == str(arg)
    assert omniglot_root(None) == str(env)
    assert omniglot_root(tmp_path / "missing") == str(env)  # a missing folder falls back
    monkeypatch.setenv("METAROBUST_DATA", str(tmp_path / "gone"))
    assert omniglot_root(None) is None
    assert omniglot_root(arg) == str(arg)
    monkeypatch.delenv("METAROBUST_DATA")
    assert omniglot_root(None) is None
    assert omniglot_root(tmp_path / "missing") is None


def test_missing_omniglot(tmp_path, monkeypatch):
    monkeypatch.delenv("METAROBUST_DATA", raising=False)
    with pytest.raises(MissingTarget, match="pass --data-root or set METAROBUST_DATA"):
        shift_target("omniglot", 28)
    with pytest.raises(MissingTarget, match=f"no Omniglot evaluation set under {tmp_path}"):
        shift_target("omniglot", 28, data_root=tmp_path)
    monkeypatch.setenv("METAROBUST_DATA", str(tmp_path))  # the environment is used as well
    with pytest.raises(MissingTarget, match=f"no Omniglot evaluation set under {tmp_path}"):
        shift_target("omniglot", 28)


def test_omniglot_target_is_the_evaluation_set(data_root):
    images, labels, desc = shift_target("omniglot", 28, data_root=data_root)
    assert desc == "omniglot/evaluation"
    assert images.dtype == np.uint8 and images.shape == (13180, 1, 28, 28)
    assert np.bincount(labels).tolist() == [20] * 659


# ---------------------------------------------------------------- fit_images


def torch_resized(images: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    t = torch.from_numpy(images.astype(np.float32))
    kw = {"align_corners": False} if mode == "bilinear" else {}
    out = torch.nn.functional.interpolate(t, size=size, mode=mode, **kw)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def test_fit_images_repeats_or_averages_channels():
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(3, 1, 8, 8), dtype=np.uint8)
    rgb = fit_images(gray, 3, (8, 8))
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 3, 8, 8) and rgb.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, c], gray[:, 0])
    colour = rng.integers(0, 256, size=(3, 3, 8, 8), dtype=np.uint8)
    mono = fit_images(colour, 1, (8, 8))
    assert mono.dtype == np.uint8 and mono.shape == (3, 1, 8, 8)
    # the rounded mean: a sum of three integers over 3 is never a half
    want = (colour.astype(np.int64).sum(axis=1, keepdims=True) * 2 + 3) // 6
    np.testing.assert_array_equal(mono, want)
    for have, channels in ((2, 3), (3, 2)):
        with pytest.raises(ValueError, match=f"cannot map {have} channels to {channels}"):
            fit_images(np.zeros((1, have, 8, 8), np.uint8), channels, (8, 8))


def test_fit_images_same_shape_is_a_contiguous_copy_of_the_values():
    images = np.arange(2 * 1 * 6 * 6, dtype=np.uint8).reshape(2, 1, 6, 6)[:, :, :, ::-1]
    out = fit_images(images, 1, (6, 6))
    assert out.flags.c_contiguous and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("side, size, mode", [
    (28, (16, 16), "area"),      # down: area resampling
    (28, (14, 14), "area"),
    (10, (16, 16), "bilinear"),  # up: bilinear
    (28, (84, 84), "bilinear"),
])
def test_fit_images_resizes_like_torch(side, size, mode):
    rng = np.random.default_rng(side)
    images = rng.integers(0, 256, size=(4, 1, side, side), dtype=np.uint8)
    out = fit_images(images, 1, size)
    assert out.dtype == np.uint8 and out.shape == (4, 1, *size) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, torch_resized(images, size, mode))
    flat = fit_images(np.full((1, 1, side, side), 77, np.uint8), 1, size)
    assert (flat == 77).all()


def test_fit_images_gray_to_colour_and_resized():
    """Fashion-MNIST (1 x 28 x 28) for a learner of 3 x 84 x 84 images."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(2, 1, 28, 28), dtype=np.uint8)
    out = fit_images(images, 3, (84, 84))
    assert out.shape == (2, 3, 84, 84)
    want = torch_resized(np.repeat(images, 3, axis=1), (84, 84), "bilinear")
    np.testing.assert_array_equal(out, want)


def test_fit_images_checks_its_arguments():
    images = np.zeros((2, 1, 4, 4), np.uint8)
    cases = [
        ((None, 1, (8, 8)), TypeError, "^images: expected a numpy uint8 array"),
        ((images.astype(np.float32), 1, (8, 8)), TypeError, "^images: expected a numpy uint8"),
        ((images, 0, (8, 8)), ValueError, "^channels: must be >= 1"),  # was a torch error
        ((images, None, (8, 8)), TypeError, "^channels: expected an int"),
        ((images, 1, None), TypeError, "^size: expected \\(height, width\\)"),
        ((images, 1, ""), TypeError, "^size: expected \\(height, width\\)"),  # was IndexError
        ((images, 1, (8, 0)), ValueError, "^size: must be >= 1"),
        ((images, 2**31, (8, 8)), ValueError, "^channels, size: .* would take"),  # MemoryError
    ]
    for args, error, words in cases:
        with pytest.raises(error, match=words):
            fit_images(*args)
