"""EpisodeSampler over pre-extracted float32 feature vectors (N, D): the same episode
indices as the image sampler, rows equal to a NumPy gather, determinism across batch splits
and thread counts, and named errors for bad features and image-only options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metarobust as mr


def _data(n_classes=30, per=12, dim=24, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per)
    rng.shuffle(labels)
    feats = rng.standard_normal((labels.size, dim)).astype(np.float32)
    return feats, labels


def _picked_items(images_ep: torch.Tensor) -> np.ndarray:
    """Item ids of an image episode whose image of item i holds (i // 256, i % 256)."""
    x = images_ep.numpy().astype(np.int64)
    return x[..., 0, 0, 0] * 256 + x[..., 1, 0, 0]


def test_feature_episodes_draw_the_image_samplers_indices():
    feats, labels = _data()
    n = labels.size
    ids = np.arange(n)
    images = np.zeros((n, 2, 1, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 1, 0, 0] = ids // 256, ids % 256
    kw = dict(ways=5, shots=3, queries=4, seed=11)
    fs = mr.EpisodeSampler(feats, labels, **kw)
    im = mr.EpisodeSampler(images, labels, dtype="uint8", **kw)
    f, i = fs.sample_batch(7, 9), im.sample_batch(7, 9)
    for name in ("support_y", "query_y", "classes"):
        assert torch.equal(getattr(f, name), getattr(i, name))
    # the NumPy reference gather of the image sampler's items
    np.testing.assert_array_equal(f.support_x.numpy(), feats[_picked_items(i.support_x)])
    np.testing.assert_array_equal(f.query_x.numpy(), feats[_picked_items(i.query_x)])
    assert f.support_x.shape == (9, 15, 24) and f.support_x.dtype == torch.float32
    # labels of the picked items are the episode's classes, way by way
    picked = labels[_picked_items(i.support_x)]
    expect = np.take_along_axis(f.classes.numpy(), f.support_y.numpy(), axis=1)
    np.testing.assert_array_equal(picked, expect)


def test_feature_episodes_are_independent_of_batch_split_and_threads():
    feats, labels = _data(n_classes=60, per=20, dim=512)
    s = mr.EpisodeSampler((feats, labels), ways=20, shots=5, queries=15, seed=3)
    whole = s.sample_batch(100, 24)  # large enough for the parallel path
    parts = [s.sample_batch(100, 5), s.sample_batch(105, 19)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = s.sample(117)
    finally:
        torch.set_num_threads(threads)
    for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
        joined = torch.cat([getattr(p, name) for p in parts])
        assert torch.equal(joined, getattr(whole, name))
        assert torch.equal(getattr(single, name), getattr(whole, name)[17])
    again = mr.EpisodeSampler((feats, labels), ways=20, shots=5, queries=15, seed=3)
    assert torch.equal(again.sample(117).query_x, whole.query_x[17])
    other = mr.EpisodeSampler((feats, labels), ways=20, shots=5, queries=15, seed=4)
    assert not torch.equal(other.sample(117).classes, whole.classes[17])


def test_feature_sampler_takes_torch_tensors_class_subsets_and_zero_queries():
    feats, labels = _data()
    s = mr.EpisodeSampler(torch.from_numpy(feats), torch.from_numpy(labels), ways=3, shots=2,
                          queries=0, seed=1, classes=[2, 5, 7, 9])
    ep = s.sample_batch(0, 4)
    assert ep.query_x.shape == (4, 0, 24)
    assert set(ep.classes.unique().tolist()) <= {2, 5, 7, 9}
    assert s.class_ids == [2, 5, 7, 9]
    # pickling rebuilds the sampler with the same episodes
    import pickle

    assert torch.equal(pickle.loads(pickle.dumps(s)).sample(3).support_x, s.sample(3).support_x)


@pytest.mark.parametrize("kw, error, match", [
    (dict(dtype="uint8"), ValueError, "dtype: an image option"),
    (dict(mean=0.5), ValueError, "mean: an image option"),
    (dict(std=[0.2]), ValueError, "std: an image option"),
    (dict(corruption="gaussian_noise"), ValueError, "corruption: an image option"),
    (dict(layout="NHWC"), ValueError, "layout: 'NHWC' describes images"),
])
def test_image_options_on_features_are_refused(kw, error, match):
    feats, labels = _data()
    with pytest.raises(error, match=match):
        mr.EpisodeSampler(feats, labels, ways=2, shots=1, **kw)


@pytest.mark.parametrize("bad, error, match", [
    (lambda f: f.astype(np.float64), TypeError, "features: .* must have dtype float32, got "
                                                "float64"),
    (lambda f: f.astype(np.float16), TypeError, "float32, got float16"),
    (lambda f: np.where(np.arange(f.size).reshape(f.shape) == 50, np.nan, f).astype(np.float32),
     ValueError, r"features: item 2, dimension 2 is NaN"),
    (lambda f: np.where(np.arange(f.size).reshape(f.shape) == 0, -np.inf, f).astype(np.float32),
     ValueError, r"item 0, dimension 0 is -inf"),
    (lambda f: f[:, :0], ValueError, "at least one dimension"),
    (lambda f: f[:-1], ValueError, "labels: 359 labels for 360|360 labels for 359"),
    (lambda f: np.asfortranarray(f), ValueError, "features: must be C-contiguous"),
    (lambda f: f.astype(np.int32), TypeError, "float32, got int32"),
])
def test_bad_features_get_named_errors(bad, error, match):
    feats, labels = _data()
    with pytest.raises(error, match=match):
        mr.EpisodeSampler(bad(feats), labels, ways=2, shots=1)


def test_feature_fill_checks_output_buffers():
    feats, labels = _data()
    core = mr.EpisodeSampler(feats, labels, ways=2, shots=1, queries=1)._core
    ok = [np.zeros((1, 2, 24), np.float32), np.zeros((1, 2), np.int64),
          np.zeros((1, 2, 24), np.float32), np.zeros((1, 2), np.int64), np.zeros((1, 2), np.int64)]
    core.fill(0, 1, *ok)
    with pytest.raises(ValueError, match="support_x: output buffer has shape"):
        core.fill(0, 1, np.zeros((1, 2, 23), np.float32), *ok[1:])
    with pytest.raises(TypeError, match="query_x: expected dtype float32"):
        core.fill(0, 1, ok[0], ok[1], ok[2].astype(np.float64), *ok[3:])
    with pytest.raises(ValueError, match="start"):
        core.fill(2**64 - 1, 2, *[np.zeros((2,) + a.shape[1:], a.dtype) for a in ok])
    with pytest.raises(ValueError, match="features"):  # an output over the dataset
        core.fill(0, 1, feats[:2].reshape(1, 2, 24), *ok[1:])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), dim=st.integers(0, 6), ways=st.integers(0, 5),
       shots=st.integers(0, 4), queries=st.integers(0, 4),
       poison=st.sampled_from([None, np.nan, np.inf, -np.inf, 3e38]))
def test_any_feature_sampler_call_succeeds_or_names_the_problem(n, dim, ways, shots, queries,
                                                                poison):
    rng = np.random.default_rng(n * 7 + dim)
    feats = rng.standard_normal((n, dim)).astype(np.float32)
    labels = rng.integers(0, 4, n).astype(np.int64)
    if poison is not None and feats.size:
        feats.flat[rng.integers(feats.size)] = poison
    try:
        s = mr.EpisodeSampler(feats, labels, ways=ways, shots=shots, queries=queries)
    except ValueError as e:
        assert any(w in str(e) for w in ("features", "ways", "shots", "queries", "classes",
                                          "labels"))
        return
    assert np.isfinite(feats).all() and dim > 0
    ep = s.sample(5)
    assert torch.isfinite(ep.support_x).all() and ep.support_x.shape == (ways * shots, dim)
    # each row is a row of the features with the episode's class
    for x, y in zip(ep.support_x.numpy(), ep.support_y.tolist()):
        same = (feats == x).all(axis=1)
        assert (same & (labels == int(ep.classes[y]))).any()


def test_augmenting_feature_batches_is_refused_by_name():
    feats, labels = _data()
    s = mr.EpisodeSampler(feats, labels, ways=5, shots=2, queries=3, seed=1)
    with s.batches(4, num_batches=1, transform=mr.robust.Augment("all", prob=1.0)) as it:
        with pytest.raises(ValueError, match=r"batch.support_x: expected \(n, C, H, W\) images"):
            next(it)
