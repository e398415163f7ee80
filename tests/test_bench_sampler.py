"""metarobust.bench.sampler: the reference samplers draw valid episodes, the candidates
agree in kind, and the tables add up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarobust.bench import sampler as bs
from metarobust.episodes import Episode

CLASSES, PER_CLASS = 12, 6
WAYS, SHOTS, QUERIES, BATCH = 3, 2, 3, 4


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Each item's 2x2 image spells its id (two bytes), its class and 255; the classes are
    interleaved so that items of a class are not contiguous."""
    n = CLASSES * PER_CLASS
    labels = np.tile(np.arange(CLASSES, dtype=np.int64), PER_CLASS)
    ids = np.arange(n)
    images = np.stack([ids % 256, ids // 256, labels, np.full(n, 255)], axis=1)
    return images.astype(np.uint8).reshape(n, 1, 2, 2), labels


def _check_episodes(ep: Episode, images: np.ndarray, labels: np.ndarray,
                    with_classes: bool = True) -> None:
    """Shapes, labels, distinct classes, disjoint support and queries, and item values."""
    assert ep.support_x.shape == (BATCH, WAYS * SHOTS, 1, 2, 2)
    assert ep.query_x.shape == (BATCH, WAYS * QUERIES, 1, 2, 2)
    assert torch.equal(ep.support_y, torch.arange(WAYS).repeat_interleave(SHOTS).repeat(BATCH, 1))
    assert torch.equal(ep.query_y, torch.arange(WAYS).repeat_interleave(QUERIES).repeat(BATCH, 1))
    assert ep.classes.shape == (BATCH, WAYS)
    float_out = ep.support_x.dtype == torch.float32
    for b in range(BATCH):
        items = []
        for x, per in ((ep.support_x[b], SHOTS), (ep.query_x[b], QUERIES)):
            px = x.numpy().reshape(-1, 4)
            raw = np.rint(px * 255).astype(np.int64) if float_out else px.astype(np.int64)
            ids = raw[:, 0] + 256 * raw[:, 1]
            expected = images[ids].reshape(-1, 4)
            if float_out:  # the same float32 operations as the reference: x / 255
                np.testing.assert_array_equal(px, expected.astype(np.float32) / 255)
            else:
                np.testing.assert_array_equal(px, expected)
            items.append(ids.reshape(WAYS, per))
        sup, qry = items
        cls = labels[np.concatenate([sup, qry], axis=1)]
        assert (cls == cls[:, :1]).all()                  # one class per way
        assert len(set(cls[:, 0])) == WAYS                # distinct classes
        if with_classes:
            np.testing.assert_array_equal(cls[:, 0], ep.classes[b].numpy())
        all_ids = np.concatenate([sup.ravel(), qry.ravel()])
        assert len(set(all_ids)) == len(all_ids)         # support and queries disjoint


@pytest.mark.parametrize("dtype", bs.DTYPES)
def test_numpy_reference_draws_valid_episodes(data, dtype):
    images, labels = data
    ns = bs.NumpyEpisodeSampler(images, labels, WAYS, SHOTS, QUERIES, seed=1, dtype=dtype)
    for _ in range(3):
        ep = ns.sample_batch(BATCH)
        assert ep.support_x.dtype == (torch.float32 if dtype == "float32" else torch.uint8)
        _check_episodes(ep, images, labels)


def test_numpy_reference_redraws_repeated_classes():
    # 3 ways out of 4 classes: most rows of the first draw repeat a class.
    images = np.zeros((8, 1, 1, 1), np.uint8)
    ns = bs.NumpyEpisodeSampler(images, np.repeat(np.arange(4), 2), 3, 1, 1, seed=0)
    cls, sup, qry = ns.draw(200)
    assert all(len(set(row)) == 3 for row in cls.tolist())
    assert sup.shape == qry.shape == (200, 3, 1)


def test_numpy_reference_rejects_bad_dtype_and_unequal_classes(data):
    images, labels = data
    with pytest.raises(ValueError, match="dtype"):
        bs.NumpyEpisodeSampler(images, labels, WAYS, SHOTS, QUERIES, dtype="float16")
    with pytest.raises(ValueError, match="equal class sizes"):
        bs.NumpyEpisodeSampler(images[:-1], labels[:-1], WAYS, SHOTS, QUERIES)


@pytest.mark.parametrize("dtype", bs.DTYPES)
def test_dataloader_reference_draws_the_same_kind_of_episodes(data, dtype):
    images, labels = data
    fn = bs.sampler_candidates(images, labels, WAYS, SHOTS, QUERIES, BATCH, dtype,
                               names=["dataloader"])["dataloader"]
    for _ in range(2):
        _check_episodes(fn(), images, labels, with_classes=False)  # items carry no classes


@pytest.mark.parametrize("dtype", bs.DTYPES)
def test_rust_candidate_draws_valid_episodes_and_memcpy_copies_as_many_bytes(data, dtype):
    images, labels = data
    cands = bs.sampler_candidates(images, labels, WAYS, SHOTS, QUERIES, BATCH, dtype)
    assert list(cands) == list(bs.SAMPLER_CANDIDATES)
    ep = cands["rust"]()
    _check_episodes(ep, images, labels)
    copied = cands["memcpy"]()
    fields = [getattr(ep, f) for f in bs._EPISODE_FIELDS]
    assert [(a.shape, a.dtype) for a in copied] == [(tuple(t.shape), t.numpy().dtype)
                                                    for t in fields]
    assert sum(a.nbytes for a in copied) == bs._batch_bytes(
        WAYS, SHOTS, QUERIES, BATCH, 4, dtype)


def test_rust_output_allocations_fill_the_same_episodes(data):
    images, labels = data
    sampler = bs.EpisodeSampler((images, labels), ways=WAYS, shots=SHOTS, queries=QUERIES,
                                seed=3, dtype="float32")
    fns = {a: bs._rust_batches(sampler, BATCH, a) for a in ("sample_batch", "np.empty",
                                                             "reused")}
    for _ in range(2):  # consecutive batches: the same positions for each allocation
        eps = {a: fn() for a, fn in fns.items()}
        for a in ("np.empty", "reused"):
            for f in bs._EPISODE_FIELDS:
                assert torch.equal(getattr(eps[a], f), getattr(eps["sample_batch"], f)), (a, f)
    reused = fns["reused"]
    assert reused().support_x.data_ptr() == reused().support_x.data_ptr()
    with pytest.raises(ValueError, match="alloc"):
        bs._rust_batches(sampler, BATCH, "pinned")


def test_unknown_sampler_candidate_is_named(data):
    images, labels = data
    with pytest.raises(ValueError, match="'torch'"):
        bs.sampler_candidates(images, labels, WAYS, SHOTS, QUERIES, BATCH, "uint8",
                              names=["torch"])


def test_bench_sampler_rows_and_summary_on_a_tiny_setting(data):
    images, labels = data
    rows = bs.bench_sampler(images, labels, [(WAYS, SHOTS, QUERIES)], BATCH, ["uint8"],
                            repeats=1, min_time=1e-4)
    assert [r["candidate"] for r in rows] == list(bs.SAMPLER_CANDIDATES)
    eps = {r["candidate"]: r["episodes/s"] for r in rows}
    for r in rows:
        assert r["setting"] == "3w2s3q" and r["dtype"] == "uint8" and r["batch"] == BATCH
        assert r["episodes/s"] == pytest.approx(BATCH / (r["ms/batch"] / 1e3))
        assert r["rust speedup"] == pytest.approx(eps[r["candidate"]] / eps["rust"])
    (summary,) = bs.sampler_summary(rows)
    assert summary["rust/numpy"] == pytest.approx(eps["rust"] / eps["numpy"])
    assert summary["rust % memcpy"] == pytest.approx(100 * eps["rust"] / eps["memcpy"])


def test_sampler_summary_leaves_missing_candidates_nan():
    rows = [{"setting": "5w1s15q", "dtype": "uint8", "candidate": "rust", "episodes/s": 30.0},
            {"setting": "5w1s15q", "dtype": "uint8", "candidate": "numpy", "episodes/s": 10.0}]
    (s,) = bs.sampler_summary(rows)
    assert s["rust/numpy"] == 3.0
    assert math.isnan(s["rust/dataloader"]) and math.isnan(s["rust % memcpy"])


def test_sampler_alloc_probe_compares_with_sample_batch(data):
    images, labels = data
    rows = bs.sampler_alloc_probe(images, labels, [(WAYS, SHOTS, QUERIES)], BATCH,
                                  ["float32"], repeats=1, min_time=1e-4)
    assert [r["outputs"] for r in rows] == ["sample_batch", "np.empty", "reused"]
    assert rows[0]["speedup vs sample_batch"] == 1.0


def test_sampler_memory_reports_the_batch_and_dataset_sizes(data):
    images, labels = data
    row = bs.sampler_memory(images, labels, WAYS, SHOTS, QUERIES, BATCH, "float32",
                            warmup=2, batches=3, hold=2)
    assert row["dataset"] == images.nbytes / (1 << 20)
    assert row["batch out"] == bs._batch_bytes(WAYS, SHOTS, QUERIES, BATCH, 4,
                                               "float32") / (1 << 20)
    assert {"+2 warm-up", "+3 more", "+2 held", "held/batch out"} <= set(row)
    assert row["RSS start"] > 1  # MiB


def test_omniglot_like_without_data_is_synthetic(tmp_path):
    images, labels, source = bs.omniglot_like(str(tmp_path), image_size=8)
    assert images.shape == (964 * 20, 1, 8, 8) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), np.full(964, 20))
    assert "synthetic" in source


def test_omniglot_like_keeps_dark_ink_on_white(data_root):
    images, labels, source = bs.omniglot_like(str(data_root))
    assert images.shape == (964 * 20, 1, 28, 28) and "Omniglot background" in source
    assert np.median(images) == 255  # white background
    assert images.min(axis=(1, 2, 3)).max() < 128  # every glyph has dark ink
