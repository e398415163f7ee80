"""EpisodeSampler: invariants (hypothesis), determinism, threads, fork, bad input, real data."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metarobust as mr
from metarobust import _prefetch
from metarobust.episodes import EpisodeDataset


def toy(n_classes=12, per=6, shape=(1, 4, 4), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_classes * per, *shape), dtype=np.uint8)
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), per)
    perm = rng.permutation(len(labels))  # labels in no particular order
    return np.ascontiguousarray(images[perm]), np.ascontiguousarray(labels[perm])


def image_index(images):
    """Map from image bytes to dataset index (toy images are distinct with high probability)."""
    return {img.tobytes(): i for i, img in enumerate(images)}


def check_episode(ep, images, labels, ways, shots, queries):
    idx = image_index(images)
    assert ep.support_x.shape == (ways * shots, *images.shape[1:])
    assert ep.query_x.shape == (ways * queries, *images.shape[1:])
    assert ep.classes.shape == (ways,) and len(set(ep.classes.tolist())) == ways
    assert torch.equal(ep.support_y, torch.arange(ways).repeat_interleave(shots))
    assert torch.equal(ep.query_y, torch.arange(ways).repeat_interleave(queries))
    items = []
    for x, y in [(ep.support_x, ep.support_y), (ep.query_x, ep.query_y)]:
        raw = x.numpy() if x.dtype == torch.uint8 else np.rint(x.numpy() * 255).astype(np.uint8)
        for img, lab in zip(raw, y.tolist()):
            i = idx[img.tobytes()]
            assert labels[i] == ep.classes[lab], "label maps to the episode's class"
            items.append(i)
    assert len(items) == len(set(items)), "support and query never share an item"


@settings(max_examples=40, deadline=None)
@given(
    ways=st.integers(1, 6), shots=st.integers(1, 3), queries=st.integers(0, 3),
    seed=st.integers(0, 2**64 - 1), index=st.integers(0, 2**40),
    dtype=st.sampled_from(["float32", "uint8"]),
)
def test_episode_invariants(ways, shots, queries, seed, index, dtype):
    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries, seed=seed,
                          dtype=dtype)
    check_episode(s.sample(index), images, labels, ways, shots, queries)


def test_float_output_matches_numpy_reference():
    images, labels = toy(shape=(3, 5, 5))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    f = mr.EpisodeSampler((images, labels), ways=4, shots=2, queries=3, seed=9, mean=mean, std=std)
    u = mr.EpisodeSampler((images, labels), ways=4, shots=2, queries=3, seed=9, dtype="uint8")
    a, b = f.sample_batch(5, 3), u.sample_batch(5, 3)
    m = np.array(mean, np.float32)[:, None, None]
    sd = np.array(std, np.float32)[:, None, None]
    ref = (b.query_x.numpy().astype(np.float32) / np.float32(255) - m) / sd
    np.testing.assert_array_equal(a.query_x.numpy(), ref)
    assert torch.equal(a.classes, b.classes)


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 1000), count=st.integers(1, 12), cut=st.integers(0, 12))
def test_batches_equal_single_episodes_for_any_split(start, count, cut):
    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=3, shots=2, queries=2, seed=5)
    whole = s.sample_batch(start, count)
    cut = min(cut, count)
    parts = [s.sample_batch(start, cut)] if cut else []
    if count - cut:
        parts.append(s.sample_batch(start + cut, count - cut))
    for name in ("support_x", "query_x", "classes", "support_y"):
        assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(whole, name))
    assert torch.equal(whole[count - 1].query_x, s.sample(start + count - 1).query_x)


def test_seeds_differ_and_repeat():
    images, labels = toy(n_classes=30)
    a = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=1, seed=1)
    b = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=1, seed=2)
    assert torch.equal(a.sample(3).classes, a.sample(3).classes)
    assert not all(torch.equal(a.sample(i).classes, b.sample(i).classes) for i in range(5))


DETERMINISM_SCRIPT = """
import numpy as np, hashlib, metarobust as mr
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (200 * 8, 1, 6, 6), dtype=np.uint8)
labels = np.repeat(np.arange(200, dtype=np.int64), 8)
s = mr.EpisodeSampler((images, labels), ways=10, shots=2, queries=3, seed=123)
b = s.sample_batch(17, 64)
h = hashlib.sha256()
for t in (b.support_x, b.query_x, b.classes, b.support_y, b.query_y):
    h.update(t.numpy().tobytes())
print(mr._core.num_threads(), h.hexdigest())
"""


def test_same_episodes_for_any_thread_count():
    out = {}
    for n in ("1", "2", "3"):
        env = dict(os.environ, RAYON_NUM_THREADS=n)
        res = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT], env=env,
                             capture_output=True, text=True, check=True)
        threads, digest = res.stdout.split()
        assert threads == n
        out[n] = digest
    assert len(set(out.values())) == 1


def test_concurrent_python_threads():
    images, labels = toy(n_classes=40)
    s = mr.EpisodeSampler((images, labels), ways=5, shots=2, queries=2, seed=3)
    expected = s.sample_batch(0, 32).query_x
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(20):
                results[k] = s.sample_batch(0, 32).query_x
                assert torch.equal(results[k], expected)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _child(sampler, conn):
    conn.send(sampler.sample_batch(4, 8).query_x.numpy())
    conn.close()


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_after_parallel_use():
    images, labels = toy(n_classes=40)
    s = mr.EpisodeSampler((images, labels), ways=5, shots=2, queries=2, seed=3)
    expected = s.sample_batch(4, 8).query_x.numpy()  # the parent's rayon pool now exists
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(s, child))
    p.start()
    got = parent.recv() if parent.poll(60) else None
    p.join(10)
    assert got is not None, "the forked child hung or died"
    np.testing.assert_array_equal(got, expected)


def test_dataloader_fork_workers():
    images, labels = toy(n_classes=40)
    s = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=2, seed=8)
    s.sample_batch(0, 4)
    loader = torch.utils.data.DataLoader(EpisodeDataset(s, 12), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    for i, ep in enumerate(loader):
        assert torch.equal(ep.query_x, s.sample(i).query_x)
    assert i == 11


def test_pickle_round_trip():
    import pickle

    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=3, shots=1, queries=1, seed=4)
    s2 = pickle.loads(pickle.dumps(s))
    assert torch.equal(s2.sample(9).support_x, s.sample(9).support_x)


def test_prefetching_iterator():
    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=3, shots=1, queries=1, seed=4)
    with s.batches(5, start=10, prefetch=3, num_batches=4) as it:
        got = list(it)
    assert len(got) == 4 and it.position == 30
    for k, b in enumerate(got):
        assert torch.equal(b.classes, s.sample_batch(10 + 5 * k, 5).classes)
    it = s.batches(2)
    next(it)
    it.close()


def wait_until(condition, timeout=10.0):
    """Polls ``condition()`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_abandoned_iterator_is_collected_and_its_thread_ends():
    """The prefetch thread holds the sampler and its queue, not the iterator: an iterator
    dropped mid-stream (of an endless run, with a full queue) is collected and its thread
    stops."""
    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=3, shots=1, queries=1, seed=4)
    it = s.batches(2, prefetch=2)
    first = next(it)
    thread, ref = it._thread, weakref.ref(it)
    assert thread.is_alive()
    del it
    gc.collect()
    assert ref() is None, gc.get_referrers(ref()) if ref() is not None else ""
    assert wait_until(lambda: not thread.is_alive()), "the prefetch thread outlived its iterator"
    assert torch.equal(first.classes, s.sample_batch(0, 2).classes)


@pytest.mark.parametrize("how", ["exhaust", "close", "with", "break_in_with"])
def test_iterator_endings_stop_the_thread(how):
    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=3, shots=2, queries=2, seed=7, dtype="uint8")
    got = []
    if how == "exhaust":
        it = s.batches(3, start=5, num_batches=5, stride=4)
        got = list(it)
        assert next(it, None) is None
    elif how == "close":
        it = s.batches(3, start=5, stride=4)
        got = [next(it) for _ in range(3)]
        it.close()
        assert next(it, None) is None
    else:
        with s.batches(3, start=5, stride=4, num_batches=None if how == "with" else 9) as it:
            for b in it:
                got.append(b)
                if len(got) == (4 if how == "with" else 2):
                    break
    assert wait_until(lambda: not it._thread.is_alive())
    assert it.position == 5 + 4 * len(got)
    for k, b in enumerate(got):  # the batches of sample_batch, field by field
        want = s.sample_batch(5 + 4 * k, 3)
        for name in ("support_x", "support_y", "query_x", "query_y", "classes"):
            assert torch.equal(getattr(b, name), getattr(want, name)), (k, name)


def test_producer_error_is_raised_and_ends_the_thread():
    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=3, shots=1, queries=1, seed=4)

    def boom(batch, first):
        if first >= 4:
            raise RuntimeError("transform failed")
        return batch

    it = s.batches(2, transform=boom)
    assert len(list(zip(range(2), it))) == 2
    with pytest.raises(RuntimeError, match="transform failed"):
        next(it)
    assert wait_until(lambda: not it._thread.is_alive())


def test_live_prefetch_threads_are_stopped_at_exit():
    """At interpreter exit (an atexit hook) every live prefetch thread is stopped and
    joined, so none is inside the sampler while the interpreter finalizes; a process that
    exits with an iterator still open ends with status 0."""
    images, labels = toy()
    s = mr.EpisodeSampler((images, labels), ways=3, shots=1, queries=1, seed=4)
    its = [s.batches(2), s.batches(3, num_batches=1000, prefetch=1)]
    next(its[0])
    _prefetch.stop_all()
    assert not any(it._thread.is_alive() for it in its)
    code = ("import numpy as np, metarobust as mr\n"
            "images = np.zeros((4000, 1, 28, 28), np.uint8)\n"
            "labels = np.repeat(np.arange(100), 40)\n"
            "s = mr.EpisodeSampler((images, labels), ways=20, shots=5, queries=15)\n"
            "it = s.batches(64, prefetch=1)\n"
            "next(it)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr[-2000:]


def test_memory_map_and_classes_subset(tmp_path):
    images, labels = toy(n_classes=10)
    np.save(tmp_path / "x.npy", images)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    s = mr.EpisodeSampler((mm, labels), ways=3, shots=1, queries=2, seed=0, classes=[1, 4, 7, 9])
    assert s.class_ids == [1, 4, 7, 9]
    for i in range(20):
        assert set(s.sample(i).classes.tolist()) <= {1, 4, 7, 9}


# ------------------------------------------------------------------ bad input

def make(images=None, labels=None, **kw):
    i0, l0 = toy()
    args = dict(ways=3, shots=1, queries=1, seed=0)
    args.update(kw)
    return mr.EpisodeSampler((i0 if images is None else images, l0 if labels is None else labels),
                             **args)


@pytest.mark.parametrize("kw, exc, words", [
    (dict(images=np.zeros((72, 1, 4, 4), np.float32)), TypeError, "images: expected dtype uint8"),
    (dict(images=np.zeros((72, 4, 4), np.uint8)), ValueError, "images: expected 4 dimensions"),
    (dict(images=np.asfortranarray(np.zeros((72, 1, 4, 4), np.uint8))), ValueError, "C-contiguous"),
    (dict(images=np.zeros((72, 1, 4, 8), np.uint8)[..., ::2]), ValueError, "C-contiguous"),
    (dict(labels=np.zeros(72, np.int32)), TypeError, "labels: expected dtype int64"),
    (dict(labels=np.zeros(71, np.int64)), ValueError, "lengths must match"),
    (dict(labels=np.r_[-1, np.zeros(71, np.int64)]), ValueError, "labels: must be >= 0, got -1"),
    (dict(ways=13), ValueError, "ways: 13 is more than the 12 classes"),
    (dict(shots=4, queries=3), ValueError, "smallest class"),
    (dict(ways=0), ValueError, "ways: must be >= 1"),
    (dict(shots=-2), ValueError, "shots: must be >= 1"),
    (dict(queries=-1), ValueError, "queries: must be >= 0"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**64), ValueError, "seed"),
    (dict(ways=2.0), TypeError, "ways: expected an int"),
    (dict(dtype="float16"), ValueError, "dtype"),
    (dict(mean=[0.1, 0.2]), ValueError, "mean: expected 1 value \\(the images have one ch"),
    (dict(std=0.0), ValueError, "std"),
    (dict(classes=[1, 1]), ValueError, "listed twice"),
    (dict(classes=[99]), ValueError, "class 99 has no items"),
    (dict(shots=2**62, queries=2**62), ValueError, "overflow"),
    (dict(severity=5), ValueError, "severity: configures a corruption, and none is given"),
    (dict(corrupt="both"), ValueError, "corrupt: configures a corruption"),
    (dict(ink="light"), ValueError, "ink: configures a corruption"),
    (dict(images=np.zeros((0, 1, 4, 4), np.uint8), labels=np.zeros(0, np.int64)), ValueError,
     "empty"),
])
def test_bad_input(kw, exc, words):
    with pytest.raises(exc, match=words):
        make(**kw)


def test_sparse_class_ids_sample_as_dense_ones():
    # Class ids up to 2^62 used to size tables by the largest id (an abort at 2^40).
    images, labels = toy()
    sparse = labels * 2**58 + 7
    a = mr.EpisodeSampler((images, labels), ways=3, shots=2, queries=2, seed=5)
    b = mr.EpisodeSampler((images, sparse), ways=3, shots=2, queries=2, seed=5)
    ea, eb = a.sample_batch(4, 3), b.sample_batch(4, 3)
    for field in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(ea, field), getattr(eb, field)), field
    assert torch.equal(ea.classes * 2**58 + 7, eb.classes)


def test_smallest_class_is_named():
    images, labels = toy(n_classes=5, per=6)
    labels = labels.copy()
    labels[np.flatnonzero(labels == 3)[:4]] = 0  # class 3 keeps 2 items
    with pytest.raises(ValueError, match="items of class 3"):
        mr.EpisodeSampler((images, labels), ways=2, shots=2, queries=1)


def test_bad_calls():
    s = make()
    with pytest.raises(ValueError, match="index"):
        s.sample(-1)
    with pytest.raises(ValueError, match="count"):
        s.sample_batch(0, 0)
    with pytest.raises(TypeError, match="dataset"):
        mr.EpisodeSampler(object(), ways=1, shots=1)
    with pytest.raises(TypeError, match="labels: expected dtype int64, got float32"):
        mr.EpisodeSampler((torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4)), ways=1,
                          shots=1)
    core = s._core
    with pytest.raises(ValueError, match="output buffer"):
        core.fill(0, 2, np.zeros((1, 3, 1, 4, 4), np.float32), np.zeros((1, 3), np.int64),
                  np.zeros((1, 3, 1, 4, 4), np.float32), np.zeros((1, 3), np.int64),
                  np.zeros((1, 3), np.int64))
    with pytest.raises(TypeError, match="query_x"):
        core.fill(0, 1, np.zeros((1, 3, 1, 4, 4), np.float32), np.zeros((1, 3), np.int64),
                  np.zeros((1, 3, 1, 4, 4), np.float64), np.zeros((1, 3), np.int64),
                  np.zeros((1, 3), np.int64))


# ------------------------------------------------------------------ real data

def test_omniglot_sampler_invariants(omniglot_npz):
    images, labels = omniglot_npz
    for ways, shots, queries in [(5, 1, 15), (20, 5, 15)]:
        s = mr.EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries, seed=7,
                              dtype="uint8")
        b = s.sample_batch(0, 8)
        for j in range(8):
            ep = b[j]
            assert len(set(ep.classes.tolist())) == ways
            # every image of way k must be one of the 20 drawings of its class
            for x, y in [(ep.support_x, ep.support_y), (ep.query_x, ep.query_y)]:
                for img, lab in zip(x.numpy(), y.tolist()):
                    c = int(ep.classes[lab])
                    pool = images[c * 20:(c + 1) * 20]
                    assert (pool == img).all(axis=(1, 2, 3)).any()
    # Braille/character01 has two identical drawings; all others are unique
    s = mr.EpisodeSampler((images, labels), ways=5, shots=5, queries=15, seed=1, dtype="uint8")
    ep = s.sample(0)
    flat = torch.cat([ep.support_x, ep.query_x]).reshape(100, -1).numpy()
    assert len({r.tobytes() for r in flat}) >= 99


# ------------------------------------------------------------------ more bad input, each named

@pytest.mark.parametrize("kw, exc, words", [
    (dict(images=[[1]]), TypeError, "dataset: images or features: expected a numpy array"),
    (dict(images=np.array(["a", "b"])), TypeError,
     "dataset: images or features: expected uint8 .* images or float32 .* features"),
    (dict(labels=list(range(72))), TypeError, "dataset: labels: expected a numpy array"),
    (dict(labels=np.zeros((72, 1), np.int64)), ValueError, "dataset: labels: expected 1 dim"),
    (dict(ways=2**64), ValueError, "ways: must be <= "),
    (dict(shots=2**70), ValueError, "shots: must be <= "),
    (dict(queries=2**64), ValueError, "queries: must be <= "),
    (dict(dtype=[]), ValueError, "dtype: expected 'float32' or 'uint8'"),
    (dict(dtype=None), ValueError, "dtype: expected 'float32' or 'uint8'"),
    (dict(mean=True), TypeError, "mean: expected a real number, got True"),
    (dict(mean="x"), TypeError, "mean: expected a real number, got 'x'"),
    (dict(mean=[[0.5]]), TypeError, "mean: expected a real number, got \\[0.5\\]"),
    (dict(mean=np.zeros((1, 1))), ValueError, "mean: expected one value or one per channel"),
    (dict(mean=float("nan")), ValueError, "mean: must be finite"),
    (dict(std="x"), TypeError, "std: expected a real number, got 'x'"),
    (dict(std=1e-45), ValueError, "std: 1e-45 scales \\[0, 1\\] pixels"),
    (dict(mean=0.5, std=1e-39), ValueError, "std: 1e-39 scales"),
    (dict(classes=[]), ValueError, "classes: must name at least one class"),
    (dict(classes=[[1, 2, 3]]), ValueError, "classes: expected a 1-D list"),
    (dict(classes=[[1, 2], [3]]), ValueError, "classes: expected a 1-D list"),
    (dict(classes=np.array([2**63, 1, 2], np.uint64)), ValueError,
     "classes: class 9223372036854775808 is not a label"),
])
def test_bad_input_is_named(kw, exc, words):
    with pytest.raises(exc, match=words):
        make(**kw)


def test_labels_given_apart_are_named_labels():
    images, labels = toy()
    with pytest.raises(TypeError, match="^labels: expected dtype int64, got int32"):
        mr.EpisodeSampler(images, labels.astype(np.int32), ways=3, shots=1)
    with pytest.raises(TypeError, match="^labels: expected a numpy array, got list"):
        mr.EpisodeSampler(images, list(labels), ways=3, shots=1)


def test_huge_counts_are_refused_before_allocating():
    # used to be NumPy MemoryErrors ("Unable to allocate ... TiB") or "Maximum allowed
    # dimension exceeded"
    s = make()
    for count in (2**40, 2**62, 2**64):
        with pytest.raises(ValueError, match="^count: "):
            s.sample_batch(0, count)
        with pytest.raises(ValueError, match="^batch_size: "):
            s.batches(count)
    with pytest.raises(ValueError, match=r"^prefetch: \d+ batches of 1 episodes .* would take"):
        s.batches(1, prefetch=2**40)
    with pytest.raises(ValueError, match="^index: must be in"):
        s.sample(2**64)
    with pytest.raises(TypeError, match="^count: expected an int, got 2.0"):
        s.sample_batch(0, 2.0)


def test_pin_memory_is_a_bool_and_needs_cuda():
    s = make()
    for bad in (None, 1, "yes"):
        with pytest.raises(TypeError, match="^pin_memory: expected a bool"):
            s.sample_batch(0, 1, pin_memory=bad)
        with pytest.raises(TypeError, match="^pin_memory: expected a bool"):
            s.batches(1, pin_memory=bad)
    if not torch.cuda.is_available():
        # torch's own error was a RuntimeError about the NVIDIA driver
        with pytest.raises(ValueError, match="^pin_memory: page-locked memory needs a CUDA"):
            s.sample_batch(0, 1, pin_memory=True)


def test_episode_dataset_checks_its_arguments():
    with pytest.raises(TypeError, match="^sampler: expected an EpisodeSampler, got NoneType"):
        EpisodeDataset(None, 3)
    ds = EpisodeDataset(make(), 3)
    with pytest.raises(TypeError, match="^index: expected an int, got 'x'"):
        ds["x"]
    with pytest.raises(IndexError, match="index: 3 outside"):
        ds[3]
