"""Corruptions: metarobust.robust.corrupt and the corrupting EpisodeSampler (determinism,
range, severity monotone on real glyphs, stream mapping, batch split, pickling, bad input),
and the table of what each does (CORRUPTION_INFO) against measured facts."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metarobust as mr
from metarobust import _core
from metarobust.robust import CORRUPTIONS, corrupt
from metarobust.robust import corruptions as corruptions_module
from metarobust.robust.corruptions import CORRUPTION_INFO

NAMES = (
    "gaussian_noise", "impulse_noise", "gaussian_blur", "thicken", "thin", "elastic",
    "occlusion", "contrast", "rotate", "shear",
)
# Real-looking data: dark ink on white, as Omniglot.
GLYPHS = mr.data.glyphs(num_classes=12, per_class=6, image_size=28, seed=3)


def glyph_images(n: int = 8) -> np.ndarray:
    return np.ascontiguousarray(GLYPHS.images[:: len(GLYPHS.images) // n][:n])


@pytest.fixture(scope="module")
def omniglot28(data_root: Path) -> np.ndarray:
    """Eight Omniglot drawings (two characters), BOX-resized 105 -> 28 as the benchmarks do."""
    from PIL import Image

    alphabet = sorted((data_root / "omniglot-py" / "images_background").iterdir())[0]
    files = [f for c in sorted(alphabet.iterdir())[:2] for f in sorted(c.glob("*.png"))[:4]]
    images = [np.asarray(Image.open(f).convert("L").resize((28, 28), Image.BOX)) for f in files]
    return np.ascontiguousarray(np.stack(images)[:, None])


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_names():
    assert CORRUPTIONS == NAMES == _core.CORRUPTIONS == mr.corruption_info.CORRUPTIONS


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_deterministic_bounded_new_array(name, dtype):
    x = glyph_images()
    if dtype == "float32":
        x = x.astype(np.float32) / 255
    before = x.copy()
    a = corrupt(x, name, 5, seed=4, index=9)
    assert a.dtype == x.dtype and a.shape == x.shape and a is not x
    assert np.array_equal(x, before), "the input is left alone"
    assert np.array_equal(a, corrupt(x, name, 5, seed=4, index=9))
    if dtype == "float32":
        assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert not np.array_equal(a, x)


def check_monotone(images: np.ndarray, name: str) -> None:
    diffs = [mad(corrupt(images, name, s, seed=1, index=2), images) for s in range(1, 6)]
    assert diffs[0] > 0, name
    assert all(b > a for a, b in zip(diffs, diffs[1:])), f"{name}: {diffs}"


@pytest.mark.parametrize("name", NAMES)
def test_monotone_in_severity_on_glyphs(name):
    check_monotone(glyph_images(), name)


@pytest.mark.parametrize("name", NAMES)
def test_monotone_in_severity_on_omniglot(name, omniglot28):
    check_monotone(omniglot28, name)


@pytest.mark.parametrize("name", NAMES)
def test_uint8_is_the_rounded_float_result(name):
    x = glyph_images(4)
    f = corrupt(x.astype(np.float32) / np.float32(255), name, 3, seed=7)
    # In float32, as the core computes it.
    want = np.floor(f * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    assert np.array_equal(corrupt(x, name, 3, seed=7), want)


def test_polarity():
    x = glyph_images(4)
    light = 255 - x
    for name in ("thicken", "thin", "occlusion", "rotate", "shear", "elastic"):
        dark = corrupt(x, name, 4, seed=2)
        mirrored = 255 - corrupt(light, name, 4, seed=2, ink="light")
        assert np.abs(dark.astype(int) - mirrored).max() <= 1, name
    # Thickening dark ink darkens the image; thinning it lightens.
    assert (corrupt(x, "thicken", 3) <= x).all() and (corrupt(x, "thicken", 3) < x).any()
    assert (corrupt(x, "thin", 3) >= x).all() and (corrupt(x, "thin", 3) > x).any()


def test_streams():
    x = np.repeat(glyph_images(1), 4, axis=0)
    a = corrupt(x, "gaussian_noise", 2, seed=5, index=6)
    assert not np.array_equal(a[0], a[1]), "identical images, different items"
    assert not np.array_equal(a, corrupt(x, "gaussian_noise", 2, seed=6, index=6))
    assert not np.array_equal(a, corrupt(x, "gaussian_noise", 2, seed=5, index=7))
    # A one-image call is item 0 of the stream.
    assert np.array_equal(corrupt(x[:1], "gaussian_noise", 2, seed=5, index=6), a[:1])


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(NAMES), severity=st.integers(1, 5), seed=st.integers(0, 2**64 - 1),
    index=st.integers(0, 2**64 - 1), j=st.integers(0, 5), ink=st.sampled_from(["dark", "light"]),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)),
)
def test_image_j_depends_only_on_image_j(name, severity, seed, index, j, ink, shape):
    rng = np.random.default_rng(seed % 1000)
    x = rng.integers(0, 256, (6, *shape), dtype=np.uint8)
    y = rng.integers(0, 256, (6, *shape), dtype=np.uint8)
    y[j] = x[j]
    a = corrupt(x, name, severity, seed=seed, index=index, ink=ink)
    b = corrupt(y, name, severity, seed=seed, index=index, ink=ink)
    assert np.array_equal(a[j], b[j])
    f = corrupt(x.astype(np.float32) / 255, name, severity, seed=seed, index=index, ink=ink)
    assert f.min() >= 0 and f.max() <= 1


def test_empty_batch():
    x = np.zeros((0, 1, 28, 28), np.uint8)
    assert corrupt(x, "rotate", 1).shape == x.shape


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"severity": 0}, ValueError, r"severity: must be in \[1, 5\], got 0"),
    ({"severity": 6}, ValueError, r"severity: .* got 6"),
    ({"severity": 2.0}, TypeError, "severity"),
    ({"severity": True}, TypeError, "severity"),
    ({"name": "fog"}, ValueError, r"name: unknown corruption 'fog'; expected one of "
                                  r"'gaussian_noise', .*'shear'"),
    ({"name": None}, TypeError, "name"),
    ({"name": 3}, TypeError, "name"),
    ({"ink": "grey"}, ValueError, r"ink: expected 'dark', 'light', got 'grey'"),
    ({"seed": -1}, ValueError, "seed"),
    ({"index": 2**64}, ValueError, "index"),
])
def test_bad_arguments(kwargs, exc, match):
    args = {"images": glyph_images(2), "name": "rotate", "severity": 3} | kwargs
    with pytest.raises(exc, match=match):
        corrupt(**args)


@pytest.mark.parametrize(("images", "exc", "match"), [
    (np.zeros((2, 1, 4, 4), np.float64), TypeError, "images: expected dtype uint8 or float32"),
    (np.zeros((2, 1, 4, 4), np.int16), TypeError, "images: expected dtype"),
    (torch.zeros(2, 1, 4, 4), TypeError, r"images: expected a numpy array.*tensor.numpy"),
    ([[[[0]]]], TypeError, "images: expected a numpy array"),
    (np.zeros((1, 4, 4), np.uint8), ValueError, r"images: expected 4 dimensions"),
    (np.zeros((2, 1, 4, 8), np.uint8)[..., ::2], ValueError, "C-contiguous"),
    (np.full((2, 1, 4, 4), 1.5, np.float32), ValueError, r"images: float32 values must lie "
                                                         r"in \[0, 1\]; got 1.5"),
    (np.full((2, 1, 4, 4), np.nan, np.float32), ValueError, "images: float32 values"),
])
def test_bad_images(images, exc, match):
    with pytest.raises(exc, match=match):
        corrupt(images, "gaussian_noise", 1)


def test_core_errors_are_clean():
    x = glyph_images(2)
    with pytest.raises(ValueError, match="out: shape"):
        _core.corrupt_into(x, np.empty((3, 1, 28, 28), np.uint8), "rotate", 1, 0, 0, "dark")
    with pytest.raises(ValueError, match="out: is the same array as images"):
        _core.corrupt_into(x, x, "rotate", 1, 0, 0, "dark")
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        _core.corrupt_into(x, ro, "rotate", 1, 0, 0, "dark")
    with pytest.raises(ValueError, match="name: unknown corruption"):
        _core.corrupt_into(x, np.empty_like(x), "fog", 1, 0, 0, "dark")


# ---------------------------------------------------------------- the sampler


def sampler(**kwargs) -> mr.EpisodeSampler:
    args = {"ways": 5, "shots": 2, "queries": 3, "seed": 11} | kwargs
    return mr.EpisodeSampler(GLYPHS, **args)


def same(a: mr.Episode, b: mr.Episode, fields=("support_x", "support_y", "query_x",
                                                 "query_y", "classes")) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("name", NAMES)
def test_query_corruption_leaves_the_support(name, dtype):
    clean = sampler(dtype=dtype).sample_batch(3, 4)
    dirty = sampler(dtype=dtype, corruption=name, severity=4).sample_batch(3, 4)
    assert same(clean, dirty, ("support_x", "support_y", "query_y", "classes"))
    assert not torch.equal(clean.query_x, dirty.query_x)


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize(("name", "target"), [
    ("gaussian_noise", "query"), ("elastic", "both"), ("rotate", "support"),
    ("thin", "query"), ("occlusion", "both"), ("impulse_noise", "support"),
])
def test_sampler_items_are_corrupt_of_the_clean_items(name, target, dtype):
    clean = sampler(dtype=dtype)
    dirty = sampler(dtype=dtype, corruption=name, severity=2, corrupt=target)
    n_support = clean.ways * clean.shots
    for i in (0, 5, 2**40):
        c, d = clean.sample(i), dirty.sample(i)
        items = np.concatenate([c.support_x.numpy(), c.query_x.numpy()])
        want = corrupt(items, name, 2, seed=11, index=i)
        got = np.concatenate([d.support_x.numpy(), d.query_x.numpy()])
        hit = np.zeros(len(items), bool)
        hit[:n_support] = target in ("support", "both")
        hit[n_support:] = target in ("query", "both")
        assert np.array_equal(got[hit], want[hit])
        assert np.array_equal(got[~hit], items[~hit])


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("name", ["gaussian_blur", "thicken", "thin", "contrast", "rotate",
                                  "shear"])
def test_cached_corruptions_are_the_computed_ones(name, dtype):
    # These have a finite set of results per image: after enough items the sampler caches
    # them; the cached episodes must still be the corruption of the clean items.
    clean = sampler(dtype=dtype)
    cached = sampler(dtype=dtype, corruption=name, severity=3, corrupt="both")
    off = sampler(dtype=dtype, corruption=name, severity=3, corrupt="both",
                  corruption_cache_mb=0)
    assert not cached._core.cache_built(dtype)
    first = cached.sample_batch(0, 2)  # 50 items: fewer than 72 images (x2 for warps)
    assert not cached._core.cache_built(dtype)
    batch = cached.sample_batch(0, 40)
    # Contrast is as cheap to compute as a float row is to read: cached for uint8 only.
    want_cache = not (name == "contrast" and dtype == "float32")
    assert cached._core.cache_built(dtype) == want_cache and not off._core.cache_built(dtype)
    assert same(first, batch[:2]) and same(batch, off.sample_batch(0, 40))
    for i in (3, 39):
        c = clean.sample(i)
        items = np.concatenate([c.support_x.numpy(), c.query_x.numpy()])
        got = np.concatenate([batch[i].support_x.numpy(), batch[i].query_x.numpy()])
        assert np.array_equal(got, corrupt(items, name, 3, seed=11, index=i))
    if dtype == "float32":
        norm = sampler(corruption=name, severity=3, corrupt="both", mean=0.5, std=0.25)
        nb = norm.sample_batch(0, 40)
        assert norm._core.cache_built("float32") == want_cache
        expect = (batch.query_x - 0.5) / 0.25
        assert torch.equal(nb.query_x, expect), "(x - mean) / std of the cached values"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "big", True, None])
def test_bad_cache_size(bad):
    with pytest.raises(ValueError, match="corruption_cache_mb: expected a finite number >= 0"):
        sampler(corruption="rotate", corruption_cache_mb=bad)


def test_batch_split_and_batches():
    s = sampler(corruption="elastic", severity=5, corrupt="both")
    batch = s.sample_batch(0, 8)
    for j in range(8):
        assert same(batch[j], s.sample(j))
    halves = [s.sample_batch(0, 3), s.sample_batch(3, 5)]
    assert torch.equal(torch.cat([h.query_x for h in halves]), batch.query_x)
    with s.batches(4, num_batches=2) as it:
        first, second = list(it)
    assert same(first, s.sample_batch(0, 4)) and same(second, s.sample_batch(4, 4))


def test_thread_count_does_not_matter(tmp_path):
    code = (
        "import hashlib, numpy as np, metarobust as mr\n"
        "from metarobust.robust import corrupt\n"
        "ds = mr.data.glyphs(num_classes=12, per_class=6, image_size=28, seed=3)\n"
        "s = mr.EpisodeSampler(ds, ways=5, shots=2, queries=3, seed=11, corruption='rotate')\n"
        "b = s.sample_batch(0, 16)\n"
        "h = hashlib.sha256(b.query_x.numpy().tobytes())\n"
        "h.update(corrupt(ds.images, 'elastic', 3, seed=1).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    s = sampler(corruption="rotate", severity=3)
    h = hashlib.sha256(s.sample_batch(0, 16).query_x.numpy().tobytes())
    h.update(corrupt(GLYPHS.images, "elastic", 3, seed=1).tobytes())
    assert out == h.hexdigest()


def test_pickling_keeps_the_corruption():
    s = sampler(corruption="thicken", severity=2, corrupt="both", ink="light", dtype="uint8")
    t = pickle.loads(pickle.dumps(s))
    assert (t.corruption, t.severity, t.corrupt, t.ink) == ("thicken", 2, "both", "light")
    assert same(s.sample_batch(7, 3), t.sample_batch(7, 3))
    assert "corruption='thicken'" in repr(t)
    small = sampler(corruption="rotate", corruption_cache_mb=0.5)
    assert pickle.loads(pickle.dumps(small)).corruption_cache_mb == 0.5
    huge = sampler(corruption="rotate", corruption_cache_mb=1e30)  # no overflow: "no limit"
    assert same(huge.sample_batch(0, 40), sampler(corruption="rotate").sample_batch(0, 40))
    ds = mr.episodes.EpisodeDataset(s, 4)
    assert same(pickle.loads(pickle.dumps(ds))[2], s.sample(2))
    # A state pickled before corruptions existed still loads (clean).
    state = s.__getstate__()
    for key in ("corruption", "severity", "corrupt", "ink"):
        del state[key]
    old = mr.EpisodeSampler.__new__(mr.EpisodeSampler)
    old.__setstate__(state)
    assert old.corruption is None and same(old.sample(1), sampler(dtype="uint8").sample(1))


def test_support_and_both():
    clean = sampler().sample_batch(0, 4)
    sup = sampler(corruption="contrast", corrupt="support").sample_batch(0, 4)
    both = sampler(corruption="contrast", corrupt="both").sample_batch(0, 4)
    assert torch.equal(sup.query_x, clean.query_x)
    assert not torch.equal(sup.support_x, clean.support_x)
    assert torch.equal(both.support_x, sup.support_x)
    assert not torch.equal(both.query_x, clean.query_x)


def test_corruption_runs_before_normalisation():
    plain = sampler(corruption="gaussian_blur").sample(4)
    norm = sampler(corruption="gaussian_blur", mean=0.5, std=0.25).sample(4)
    torch.testing.assert_close(norm.query_x, (plain.query_x - 0.5) / 0.25)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"corruption": "fog"}, ValueError, r"corruption: unknown corruption 'fog'; expected one "
                                        r"of 'gaussian_noise'"),
    ({"corruption": 1}, TypeError, "corruption: expected a str"),
    ({"corruption": "rotate", "severity": 0}, ValueError, r"severity: must be in \[1, 5\]"),
    ({"corruption": "rotate", "severity": 6}, ValueError, "severity"),
    ({"severity": 9}, ValueError, "severity"),
    ({"corruption": "rotate", "corrupt": "all"}, ValueError,
     r"corrupt: expected 'query', 'support', 'both', got 'all'"),
    ({"corruption": "rotate", "ink": "grey"}, ValueError, r"ink: expected 'dark', 'light'"),
    ({"corruption": "rotate", "ink": None}, ValueError, "ink"),
])
def test_sampler_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sampler(**kwargs)


def test_clean_sampler_is_unchanged():
    # corruption=None must not disturb the episodes (the default path); the corruption's
    # options without one would do nothing, so they are refused.
    a, b = sampler(), sampler(corruption=None, severity=3, corrupt="query", ink="dark")
    assert same(a.sample_batch(0, 5), b.sample_batch(0, 5))
    with pytest.raises(ValueError, match="severity: configures a corruption, and none"):
        sampler(severity=5, corrupt="both", ink="light")


# ------------------------------------------------------------------ augmentation

@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_augment_is_the_corruption_of_the_clean_episode(dtype):
    s = sampler(dtype=dtype)
    aug = mr.robust.Augment(["gaussian_blur", "elastic"], max_severity=4, prob=0.5, seed=5)
    clean = s.sample_batch(20, 40)
    got = aug(s.sample_batch(20, 40), 20)
    changed = 0
    for j in range(40):
        items = torch.cat([clean.support_x[j], clean.query_x[j]])
        chosen = aug.choice(20 + j)
        if chosen is None:
            want = items
        else:
            name, severity = chosen
            assert name in ("gaussian_blur", "elastic") and 1 <= severity <= 4
            want = torch.from_numpy(corrupt(items.numpy(), name, severity, seed=5, index=20 + j))
            assert not torch.equal(want, items)
            changed += 1
        assert torch.equal(torch.cat([got.support_x[j], got.query_x[j]]), want)
        assert torch.equal(got.support_y[j], clean.support_y[j])
    assert 8 <= changed <= 32  # prob 0.5 of 40 episodes
    # the choice depends on the episode index, not on the batch split
    part = aug(s.sample_batch(25, 5), 25)
    assert torch.equal(part.query_x, got.query_x[5:10])


def test_augment_probability_and_batches():
    s = sampler(dtype="uint8")
    never = mr.robust.Augment("all", prob=0.0)
    assert same(never(s.sample_batch(0, 6), 0), s.sample_batch(0, 6))
    always = mr.robust.Augment("thin", max_severity=1, prob=1.0, seed=2)
    with s.batches(3, start=6, num_batches=2, transform=always) as it:
        first, second = list(it)
    for j, ep in enumerate([*[first[i] for i in range(3)], *[second[i] for i in range(3)]]):
        clean = s.sample(6 + j)
        items = torch.cat([clean.support_x, clean.query_x]).numpy()
        want = corrupt(items, "thin", 1, seed=2, index=6 + j)
        assert np.array_equal(torch.cat([ep.support_x, ep.query_x]).numpy(), want)
    assert len(mr.robust.Augment("all").names) == len(NAMES)
    assert mr.robust.Augment("gaussian_blur, thin").names == ("gaussian_blur", "thin")


@pytest.mark.parametrize("kwargs, match", [
    ({"names": []}, "names: expected at least one"),
    ({"names": "blur"}, "names: unknown corruption 'blur'"),
    ({"names": "thin", "max_severity": 0}, "max_severity"),
    ({"names": "thin", "prob": -0.1}, "prob: expected a probability"),
    ({"names": "thin", "ink": "grey"}, "ink: expected"),
])
def test_augment_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mr.robust.Augment(**kwargs)
    with pytest.raises(TypeError, match="names: expected corruption names"):
        mr.robust.Augment(5)
    s = sampler()
    with pytest.raises(TypeError, match="transform: expected a callable"):
        s.batches(2, transform="thin")


# The table the module's documentation listed by hand before it came from the core.
DOCUMENTED_VALUES = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "gaussian_blur": (0.5, 0.75, 1, 1.25, 1.5),
    "thicken": (0.4, 0.7, 1, 1.4, 1.8),
    "thin": (0.15, 0.3, 0.45, 0.6, 0.8),
    "elastic": (0.6, 0.9, 1.2, 1.6, 2),
    "occlusion": (1, 2, 3, 4, 5),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "rotate": (0.2, 0.4, 0.6, 0.8, 1),
    "shear": (0.2, 0.4, 0.6, 0.8, 1),
}


def test_info_and_the_generated_table_keep_the_documented_values():
    assert {name: info.values for name, info in CORRUPTION_INFO.items()} == DOCUMENTED_VALUES
    doc = corruptions_module.__doc__
    for name, values in DOCUMENTED_VALUES.items():
        row = next(line for line in doc.splitlines() if line.startswith(name + " "))
        assert ", ".join(f"{v:g}" for v in values) in row, row
    assert ">>> corrupt(x" in doc and "ink" in doc and "min(H, W) / 28" in doc


def _clipped_normal_std(std: float) -> float:
    """The std of ``clip(0.5 + std z, 0, 1)``, ``z ~ N(0, 1)``, by numerical integration."""
    z = np.linspace(-8, 8, 160_001)
    w = np.exp(-0.5 * z * z)
    w /= w.sum()
    v = np.clip(0.5 + std * z, 0, 1)
    return float(np.sqrt((w * v * v).sum() - (w * v).sum() ** 2))


def test_gaussian_noise_has_the_listed_std():
    x = np.full((4, 1, 64, 64), 0.5, np.float32)
    for severity, std in enumerate(CORRUPTION_INFO["gaussian_noise"].values, 1):
        got = corrupt(x, "gaussian_noise", severity, seed=3).std()
        assert abs(got / _clipped_normal_std(std) - 1) < 0.03, (severity, std, got)


def test_impulse_noise_changes_the_listed_fraction():
    x = np.full((4, 1, 128, 128), 0.5, np.float32)
    for severity, amount in enumerate(CORRUPTION_INFO["impulse_noise"].values, 1):
        out = corrupt(x, "impulse_noise", severity, seed=5)
        salt, pepper = (out == 1).mean(), (out == 0).mean()
        assert abs((salt + pepper) / amount - 1) < 0.1, (severity, amount, salt + pepper)
        assert (out != 0.5).sum() == (out == 1).sum() + (out == 0).sum()
        assert abs(salt - pepper) < 0.2 * amount, (severity, salt, pepper)


def test_occlusion_draws_the_listed_number_of_squares():
    side = int(re.fullmatch(r"squares of (\d+)x\1 px", CORRUPTION_INFO["occlusion"].parameter)[1])
    x = np.full((200, 1, 28, 28), 255, np.uint8)
    for severity, count in enumerate(CORRUPTION_INFO["occlusion"].values, 1):
        ink = (corrupt(x, "occlusion", severity, seed=2) == 0).sum(axis=(1, 2, 3))
        # Squares may overlap, but among 200 images some have them all apart.
        assert ink.max() == count * side * side and ink.min() >= side * side, severity


def test_contrast_scales_by_the_listed_factor():
    x = np.random.default_rng(0).random((2, 3, 28, 28), dtype=np.float32)
    for severity, factor in enumerate(CORRUPTION_INFO["contrast"].values, 1):
        out = corrupt(x, "contrast", severity).astype(np.float64)
        ratio = out.std(axis=(2, 3)) / x.std(axis=(2, 3))
        assert np.allclose(ratio, factor, rtol=1e-4), (severity, factor, ratio)


@pytest.mark.parametrize("names", [[None], ["thin", None], (None,)])
def test_augment_refuses_none_among_the_names(names):
    with pytest.raises(TypeError, match="^names: expected corruption names"):
        mr.robust.Augment(names)


def test_augment_takes_numpy_probabilities_and_names_bad_ones():
    assert mr.robust.Augment("thin", prob=np.float32(0.5)).prob == 0.5
    for bad in (None, "0.5", True):
        with pytest.raises(TypeError, match="^prob: expected a probability in"):
            mr.robust.Augment("thin", prob=bad)
    with pytest.raises(ValueError, match="^prob: expected a probability in"):
        mr.robust.Augment("thin", prob=float("nan"))


def test_augment_call_checks_batch_and_first_index():
    aug = mr.robust.Augment("thin", prob=1.0)
    batch = sampler().sample_batch(0, 2)
    for bad in (None, 0, batch.support_x, (batch.support_x, batch.query_x)):
        # None used to be an AttributeError ('NoneType' object has no attribute 'support_y')
        with pytest.raises(TypeError, match="^batch: expected an Episode"):
            aug(bad, 0)
    double = mr.Episode(batch.support_x.double(), batch.support_y, batch.query_x.double(),
                        batch.query_y, batch.classes)
    with pytest.raises(TypeError, match="^batch.support_x: expected uint8 or float32"):
        aug(double, 0)
    normalised = sampler(mean=0.5, std=0.2).sample_batch(0, 2)
    with pytest.raises(ValueError, match="^batch: episode 0: .* must lie in \\[0, 1\\]"):
        aug(normalised, 0)
    for bad, error in ((None, TypeError), (-1, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="^first_index: "):
            aug(batch, bad)
    with pytest.raises(ValueError, match="^first_index: must be in"):
        aug(batch, 2**64 - 1)  # the second episode's index would not fit in 64 bits
    for bad, error in ((None, TypeError), (-1, ValueError), (2**64, ValueError)):
        with pytest.raises(error, match="^episode: "):
            aug.choice(bad)


def test_corrupt_names_its_arguments():
    x = np.zeros((1, 1, 8, 8), np.uint8)
    with pytest.raises(TypeError, match="^name: expected a str, got None"):
        corrupt(x, None, 1)
    with pytest.raises(ValueError, match="^name: unknown corruption 'blur'"):
        corrupt(x, "blur", 1)
    with pytest.raises(TypeError, match="^severity: expected an int, got 2.0"):
        corrupt(x, "thin", 2.0)
    with pytest.raises(TypeError, match="^seed: expected an int, got None"):
        corrupt(x, "thin", 2, seed=None)


def test_corrupt_refuses_images_whose_scratch_memory_exceeds_the_machine(tmp_path):
    # the core's per-image float scratch failed its allocation and aborted the process;
    # a sparse memory map holds the (never touched) 768 GiB of input
    huge = np.memmap(tmp_path / "huge", dtype=np.uint8, mode="w+", shape=(1, 3, 1, 2**38))
    with pytest.raises(ValueError, match="^images: corrupting images of shape .* would take"):
        corrupt(huge, "gaussian_blur", 2)
