"""The procedural glyph dataset: shapes, determinism, split disjointness, difficulty, bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from metarobust import _core
from metarobust.data import ImageDataset, glyphs
from metarobust.data.glyphs import glyph_class_ids


def test_shapes_labels_and_metadata():
    ds = glyphs(num_classes=7, per_class=3, image_size=28, seed=5, split="val")
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (21, 1, 28, 28) and ds.images.dtype == np.uint8
    assert ds.images.flags.c_contiguous
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [k for k in range(7) for _ in range(3)]
    assert ds.num_classes == 7 and len(ds.class_names) == 7
    md = ds.metadata
    assert md["source"] == "glyphs" and md["split"] == "val"
    assert md["image_size"] == 28 and md["seed"] == 5
    assert md["class_id_offset"] == 2**32


def test_defaults():
    ds = glyphs()
    assert ds.images.shape == (2000, 1, 28, 28) and ds.num_classes == 100
    assert ds.metadata["split"] == "train" and ds.metadata["seed"] == 0


@pytest.mark.parametrize("size", [8, 28, 84, 105])
def test_value_range_and_polarity(size):
    x = glyphs(num_classes=10, per_class=4, image_size=size, seed=1).images
    flat = x.reshape(len(x), -1)
    assert (flat.min(axis=1) < 128).all(), "every image has dark ink"
    assert (flat.max(axis=1) == 255).all(), "light background"
    background = (flat == 255).mean(axis=1)
    assert (background > 0.5).all(), "ink is a minority of the pixels"
    if size >= 28:
        assert (flat.min(axis=1) < 64).all(), "strokes reach (nearly) full ink"
        assert ((flat > 0) & (flat < 255)).any(axis=1).all(), "anti-aliased edges"


def test_deterministic_and_prefix_stable():
    a = glyphs(num_classes=12, per_class=6, seed=3).images
    b = glyphs(num_classes=12, per_class=6, seed=3).images
    assert np.array_equal(a, b)
    c = glyphs(num_classes=12, per_class=6, seed=4).images
    assert not np.array_equal(a, c)
    # Fewer classes or fewer images per class give a subset of the same images.
    few = glyphs(num_classes=5, per_class=2, seed=3).images
    assert np.array_equal(few.reshape(5, 2, -1), a.reshape(12, 6, -1)[:5, :2])


def test_class_independent_of_batch():
    ids = glyph_class_ids(10, "train")
    both = _core.render_glyphs(9, ids[[3, 4]], 5, 28)
    alone = _core.render_glyphs(9, ids[[4]], 5, 28)
    assert np.array_equal(both[5:], alone)
    rev = _core.render_glyphs(9, ids[::-1].copy(), 5, 28)
    fwd = _core.render_glyphs(9, ids, 5, 28)
    assert np.array_equal(rev.reshape(10, 5, -1)[::-1], fwd.reshape(10, 5, -1))


# Loads only the extension (not the package, which imports torch) so each run takes
# a fraction of a second, then hashes the same images as `_digest` below.
_SUBPROCESS = """
import hashlib, importlib.machinery as m, importlib.util as u, os
import numpy as np
pkg = u.find_spec("metarobust").submodule_search_locations[0]
path = next(os.path.join(pkg, "_core" + s) for s in m.EXTENSION_SUFFIXES
            if os.path.exists(os.path.join(pkg, "_core" + s)))
spec = u.spec_from_file_location("metarobust._core", path)
core = u.module_from_spec(spec)
spec.loader.exec_module(core)
x = core.render_glyphs(2, np.arange(40, dtype=np.int64), 10, 28)
print(core.num_threads(), hashlib.sha256(x).hexdigest())
"""


def _digest_in_subprocess(threads: int) -> str:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    n, digest = out.stdout.split()
    assert int(n) == threads
    return digest


def test_independent_of_thread_count():
    here = hashlib.sha256(glyphs(num_classes=40, per_class=10, seed=2).images).hexdigest()
    for threads in (1, 2, 3, 7):
        assert _digest_in_subprocess(threads) == here, f"{threads} threads"


def test_splits_are_disjoint():
    per = 10
    sets = {}
    for split in ("train", "val", "test"):
        ds = glyphs(num_classes=30, per_class=per, seed=0, split=split)
        sets[split] = ds.images.reshape(30, per, -1)
    for s1, s2 in [("train", "val"), ("train", "test"), ("val", "test")]:
        a, b = sets[s1], sets[s2]
        # Same class index, different split: never the same image.
        same = (a[:, :, None, :] == b[:, None, :, :]).all(axis=-1)
        assert not same.any(), f"{s1} and {s2} share an image"
        hashes = {img.tobytes() for img in a.reshape(-1, a.shape[-1])}
        assert not any(img.tobytes() in hashes for img in b.reshape(-1, b.shape[-1]))
    assert glyph_class_ids(3, "test").tolist() == [2**33, 2**33 + 1, 2**33 + 2]


def _one_nn_accuracy(images: np.ndarray, per: int, episodes: int, seed: int) -> float:
    """Raw-pixel 1-nearest-neighbour accuracy over 5-way 1-shot episodes, 5 queries per way."""
    n_classes = len(images) // per
    x = images.reshape(n_classes, per, -1).astype(np.float32)
    rng = np.random.default_rng(seed)
    correct = total = 0
    for _ in range(episodes):
        classes = rng.choice(n_classes, 5, replace=False)
        picks = np.stack([rng.choice(per, 6, replace=False) for _ in classes])
        support = x[classes, picks[:, 0]]  # (5, D)
        query = x[classes[:, None], picks[:, 1:]].reshape(25, -1)  # (25, D)
        truth = np.repeat(np.arange(5), 5)
        d = ((query[:, None, :] - support[None, :, :]) ** 2).sum(-1)
        correct += int((d.argmin(axis=1) == truth).sum())
        total += len(truth)
    return correct / total


@pytest.mark.parametrize("split", ["train", "test"])
def test_nearest_neighbour_sanity(split):
    """Learnable (well above chance, 0.2) but not solved by raw pixels."""
    ds = glyphs(num_classes=100, per_class=20, image_size=28, seed=0, split=split)
    acc = _one_nn_accuracy(ds.images, 20, episodes=200, seed=1)
    assert 0.3 < acc < 0.95, acc


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        glyphs(split="validation")
    with pytest.raises(ValueError, match="num_classes"):
        glyphs(num_classes=0)
    with pytest.raises(ValueError, match="num_classes"):
        glyphs(num_classes=2**32 + 1)
    with pytest.raises(ValueError, match="per_class"):
        glyphs(per_class=0)
    with pytest.raises(ValueError, match="image_size"):
        glyphs(image_size=7)
    with pytest.raises(ValueError, match="image_size"):
        glyphs(image_size=513)
    with pytest.raises(ValueError, match="seed"):
        glyphs(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        glyphs(seed=2**64)
    with pytest.raises(ValueError, match="too large"):
        glyphs(num_classes=2**20, per_class=2**20)
    with pytest.raises(TypeError, match="image_size"):
        glyphs(image_size=28.0)
    with pytest.raises(TypeError, match="num_classes"):
        glyphs(num_classes=True)


def test_core_bad_arguments():
    ids = np.arange(3, dtype=np.int64)
    with pytest.raises(ValueError, match="classes"):
        _core.render_glyphs(0, np.array([1, -2], dtype=np.int64), 1, 28)
    with pytest.raises(TypeError, match="classes"):
        _core.render_glyphs(0, ids.astype(np.int32), 1, 28)
    with pytest.raises(ValueError, match="classes"):
        _core.render_glyphs(0, ids.reshape(1, 3), 1, 28)
    with pytest.raises(ValueError, match="per_class"):
        _core.render_glyphs(0, ids, 0, 28)
    with pytest.raises(ValueError, match="image_size"):
        _core.render_glyphs(0, ids, 1, 513)
    with pytest.raises(ValueError, match="image_size"):
        _core.render_glyphs(0, ids, 1, 4)
    with pytest.raises(ValueError, match="overflow"):
        _core.render_glyphs(0, ids, 2**62, 512)
    assert _core.render_glyphs(0, ids[:0], 1, 28).shape == (0, 1, 28, 28)



def test_sizes_beyond_memory_are_named():
    # 2**31 classes of 2 images fit the old 2**40 byte limit and then took the machine's
    # memory; the limit is also the machine's memory now, and the message names the
    # arguments whose product it is
    with pytest.raises(ValueError, match="^num_classes, per_class, image_size: .* too large"):
        glyphs(num_classes=2**32, per_class=2**10, image_size=512)
