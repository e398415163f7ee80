"""Variable-way episodes: the Meta-Dataset procedure's distributions against an
independent NumPy implementation of the paper's definition, exact per-episode rules,
determinism, padding, multi-source sampling and bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

import metarobust as mr

# Class sizes 5..62: small classes cap the queries below 10 and the shots at n - queries.
SIZES = np.array([5 + (7 * k) % 58 for k in range(40)])
LOG_HALF, LOG_TWO = math.log(0.5), math.log(2)


def dataset(sizes: np.ndarray = SIZES, side: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (len(labels), 1, side, side), dtype=np.uint8)
    return images, labels


def reference_episode(rng: np.random.Generator, sizes: np.ndarray, min_ways=5, max_ways=50,
                      max_support=500, per_class=100, max_query=10,
                      log_lo=LOG_HALF, log_hi=LOG_TWO):
    """One episode's (classes, shots, queries) by Meta-Dataset's definition (section 3.2)."""
    ways = rng.integers(min_ways, min(max_ways, len(sizes)) + 1)
    classes = rng.choice(len(sizes), ways, replace=False)
    n = sizes[classes]
    q = min(max_query, n.min() // 2)
    rest = n - q
    beta = rng.uniform()
    size = min(np.floor(beta * np.minimum(per_class, rest) + 1).sum(), max_support)
    p = n * np.exp(rng.uniform(log_lo, log_hi, ways))
    shots = np.minimum(np.floor(p / p.sum() * (size - ways)).astype(int) + 1, rest)
    return classes, shots, q


def rust_compositions(sampler, count: int):
    """Per episode: the classes, the shots of each way and the queries per way."""
    out = []
    for b0 in range(0, count, 500):
        batch = sampler.sample_batch(b0, 500)
        for j in range(len(batch)):
            ep = batch[j]
            w = int(ep.ways)
            shots = np.bincount(ep.support_y.numpy(), minlength=w)
            q = np.bincount(ep.query_y.numpy(), minlength=w)
            assert (q == q[0]).all(), "the same queries for every way"
            out.append((ep.classes.numpy(), shots, int(q[0])))
    return out


def test_distributions_follow_the_published_procedure():
    images, labels = dataset()
    n = 4000
    rust = rust_compositions(mr.VariableEpisodeSampler((images, labels), seed=11), n)
    rng = np.random.default_rng(5)
    ref = [reference_episode(rng, SIZES) for _ in range(n)]

    # ways: uniform on 5..40 (goodness of fit to the exact distribution)
    ways = np.array([len(c) for c, _, _ in rust])
    counts = np.bincount(ways - 5, minlength=36)
    assert ways.min() >= 5 and ways.max() <= 40
    assert stats.chisquare(counts).pvalue > 1e-3

    # queries per way: exactly min(10, smallest class // 2) of the episode's classes
    for classes, _, q in rust:
        assert q == min(10, SIZES[classes].min() // 2)
    # shots: between 1 and n_c - queries, the support set at most 500
    for classes, shots, q in rust:
        assert (shots >= 1).all() and (shots <= SIZES[classes] - q).all()
        assert shots.sum() <= 500

    def sample(runs, f):
        return np.concatenate([np.atleast_1d(f(*r)) for r in runs])

    for f in (lambda c, s, q: s.sum(),                     # support set size
              lambda c, s, q: s,                           # shots of each class
              lambda c, s, q: s / s.sum(),                 # imbalance within an episode
              lambda c, s, q: q):                          # queries per way
        a, b = sample(rust, f), sample(ref, f)
        assert stats.ks_2samp(a, b).pvalue > 1e-3, (a.mean(), b.mean())


def test_the_statistical_check_sees_a_wrong_procedure():
    """The same comparison rejects episodes without the log-uniform imbalance."""
    images, labels = dataset()
    flat = mr.VariableEpisodeSampler((images, labels), seed=11, min_log_weight=0.0,
                                     max_log_weight=0.0)
    rust = rust_compositions(flat, 2000)
    rng = np.random.default_rng(5)
    ref = [reference_episode(rng, SIZES) for _ in range(2000)]
    a = np.concatenate([s / s.sum() for _, s, _ in rust])
    b = np.concatenate([s / s.sum() for _, s, _ in ref])
    assert stats.ks_2samp(a, b).pvalue < 1e-3


def test_multi_source_weights_and_records():
    a = dataset(seed=1)
    b = dataset(np.full(8, 30), seed=2)
    s = mr.VariableEpisodeSampler([a, b], weights=[1.0, 3.0], seed=4, dtype="uint8")
    batch = s.sample_batch(0, 2000)
    src = batch.source.numpy()
    assert stats.chisquare(np.bincount(src, minlength=2), [500, 1500]).pvalue > 1e-3
    # every episode's classes and pixels come from its own source
    for j in range(50):
        ep = batch[j]
        images, labels = (a, b)[int(ep.source)]
        for x, y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
            cls = ep.classes[y].numpy()
            for img, c in zip(x.numpy(), cls):
                assert (images[labels == c] == img).all(axis=(1, 2, 3)).any()
    assert (batch.ways[src == 1] <= 8).all()


def test_padding_layout_and_batch_split():
    images, labels = dataset()
    s = mr.VariableEpisodeSampler((images, labels), seed=2)
    whole = s.sample_batch(3, 12)
    assert whole.support_x.dtype == torch.float32
    for j in range(12):
        ep, one = whole[j], s.sample(3 + j)
        for name in ("support_x", "support_y", "query_x", "query_y", "classes", "ways",
                     "source"):
            assert torch.equal(getattr(ep, name), getattr(one, name)), name
        k = ep.support_y.shape[0]
        assert (whole.support_y[j, k:] == -1).all() and (whole.support_x[j, k:] == 0).all()
        assert (whole.classes[j, int(ep.ways):] == -1).all()
        # labels grouped by way, in order
        assert (torch.diff(ep.support_y) >= 0).all()
    info = s.describe(3, 12)
    assert info[:, 1].tolist() == whole.ways.tolist()
    assert whole.support_x.shape[1] == info[:, 2].max()


DETERMINISM = """
import numpy as np, hashlib, metarobust as mr
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (3000, 3, 6, 6), dtype=np.uint8)
labels = np.repeat(np.arange(60, dtype=np.int64), 50)
s = mr.VariableEpisodeSampler([(images, labels), (images[:600], labels[:600])],
                              weights=[1, 1], seed=9)
h = hashlib.sha256()
for b in (s.sample_batch(5, 40), s.sample_batch(5, 7)):
    for t in vars(b).values():
        h.update(t.numpy().tobytes())
print(mr._core.num_threads(), h.hexdigest())
"""


def test_same_episodes_for_any_thread_count():
    digests = set()
    for n in ("1", "2", "3"):
        res = subprocess.run([sys.executable, "-c", DETERMINISM],
                             env=dict(os.environ, RAYON_NUM_THREADS=n),
                             capture_output=True, text=True, check=True)
        threads, digest = res.stdout.split()
        assert threads == n
        digests.add(digest)
    assert len(digests) == 1


def test_a_pickled_sampler_samples_the_same_episodes():
    import pickle

    a, b = dataset(seed=1), dataset(np.full(8, 30), seed=2)
    s = mr.VariableEpisodeSampler([a, b], weights=[1, 2], seed=5, mean=0.5, std=0.2,
                                  classes=[None, [0, 1, 2, 3, 4, 5]], max_ways=7)
    t = pickle.loads(pickle.dumps(s))
    x, y = s.sample_batch(0, 6), t.sample_batch(0, 6)
    for name in ("support_x", "query_x", "classes", "ways", "source"):
        assert torch.equal(getattr(x, name), getattr(y, name)), name


def test_batches_are_sample_batch_at_their_starts():
    images, labels = dataset()
    s = mr.VariableEpisodeSampler((images, labels), seed=8, dtype="uint8")
    with s.batches(3, start=2, num_batches=3) as it:
        got = list(it)
    assert len(got) == 3
    for k, b in enumerate(got):
        want = s.sample_batch(2 + 3 * k, 3)
        assert torch.equal(b.support_x, want.support_x) and torch.equal(b.ways, want.ways)
    with pytest.raises(ValueError, match="batch_size"):
        s.batches(0)


def test_normalisation_matches_uint8():
    images, labels = dataset(side=3)
    u = mr.VariableEpisodeSampler((images, labels), seed=1, dtype="uint8").sample(0)
    f = mr.VariableEpisodeSampler((images, labels), seed=1, mean=0.5, std=0.25).sample(0)
    assert torch.allclose(f.query_x, (u.query_x.float() / 255 - 0.5) / 0.25, atol=1e-6)


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"seed": -1}, ValueError, "seed"),
    ({"min_ways": 0}, ValueError, "min_ways"),
    ({"max_ways": 3}, ValueError, "max_ways"),
    ({"min_ways": 41}, ValueError, "min_ways"),
    ({"max_support": 10}, ValueError, "max_support"),
    ({"max_support_per_class": 0}, ValueError, "max_support_per_class"),
    ({"max_query_per_class": 2.5}, TypeError, "max_query_per_class"),
    ({"min_log_weight": float("nan")}, ValueError, "min_log_weight"),
    ({"min_log_weight": 1.0}, ValueError, "max_log_weight"),
    ({"weights": [1.0, 2.0]}, ValueError, "weights"),
    ({"weights": [-1.0]}, ValueError, "weights"),
    ({"weights": [0.0]}, ValueError, "weights"),
    ({"weights": "1"}, TypeError, "weights"),
    ({"dtype": "float64"}, ValueError, "dtype"),
    ({"dtype": "uint8", "mean": 0.5}, ValueError, "mean"),
    ({"classes": [0, 0, 1, 2, 3]}, ValueError, "classes"),
    ({"classes": [1, 2, 3]}, ValueError, "min_ways"),
    ({"classes": [999, 1, 2, 3, 4]}, ValueError, "classes"),
])
def test_bad_arguments_are_named(kwargs, exc, words):
    images, labels = dataset()
    with pytest.raises(exc, match=words):
        mr.VariableEpisodeSampler((images, labels), **kwargs)


def test_bad_sources_are_named():
    images, labels = dataset()
    with pytest.raises(ValueError, match="sources"):
        mr.VariableEpisodeSampler([])
    with pytest.raises(ValueError, match=r"sources\[1\].*shape|images\[1\]"):
        mr.VariableEpisodeSampler([(images, labels), dataset(side=3)])
    lone = labels.copy()
    lone[lone == 3] = 99
    lone[np.flatnonzero(lone == 99)[1:]] = 4
    with pytest.raises(ValueError, match="at least 2"):
        mr.VariableEpisodeSampler((images, lone))
    with pytest.raises(TypeError, match="sources\\[0\\]"):
        mr.VariableEpisodeSampler([images])
    with pytest.raises(ValueError, match="feature vectors"):
        mr.VariableEpisodeSampler((images.reshape(len(images), -1).astype(np.float32), labels))
    s = mr.VariableEpisodeSampler((images, labels))
    for args, exc, name in (((-1, 2), ValueError, "start"), ((0, 0), ValueError, "count"),
                            ((2**64 - 1, 2), ValueError, "start"),
                            ((0, True), TypeError, "count")):
        with pytest.raises(exc, match=name):
            s.sample_batch(*args)


def test_core_refuses_small_buffers_without_panic():
    images, labels = dataset()
    s = mr.VariableEpisodeSampler((images, labels), dtype="uint8")
    info = s.describe(0, 2)
    sp, qp, wp = (int(info[:, k].max()) for k in (2, 3, 1))
    outs = [np.empty((2, sp - 1, 1, 2, 2), np.uint8), np.empty((2, sp - 1), np.int64),
            np.empty((2, qp, 1, 2, 2), np.uint8), np.empty((2, qp), np.int64),
            np.empty((2, wp), np.int64), np.empty((2, 4), np.int64)]
    with pytest.raises(ValueError, match="support_x: episode .* support items"):
        s._core.fill(0, 2, *outs)
    outs[0] = np.empty((2, sp, 1, 2, 2), np.float64)
    with pytest.raises(TypeError, match="support_x"):
        s._core.fill(0, 2, *outs)
    outs[0] = np.empty((2, sp, 1, 2, 2), np.uint8)
    buf = np.empty(2 * sp, np.int64)
    outs[1], outs[5] = buf.reshape(2, sp), buf[:8].reshape(2, 4)  # info overlaps support_y
    with pytest.raises(ValueError, match="support_y") as err:
        s._core.fill(0, 2, *outs)
    assert "info" in str(err.value)
