"""Support-label noise: exact counts (a rate over the whole support set, spread evenly over
the classes), the kinds' rules, determinism, support only, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metarobust as mr
from metarobust.robust import apply_label_noise
from metarobust.robust.label_noise import corrupted_items, effective_rate

WAYS = 5


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Small synthetic dataset: 12 classes x 12 items; each image is filled with a value
    that encodes its class and item, so an outlier's source can be read off its pixels."""
    labels = np.repeat(np.arange(12, dtype=np.int64), 12)
    images = np.empty((labels.size, 1, 4, 4), np.uint8)
    for i in range(labels.size):
        images[i] = i  # 0..143: class = value // 12
    return images, labels


def _batch(data, shots: int, count: int = 4, start: int = 0, dtype: str = "uint8"):
    sampler = mr.EpisodeSampler(data, ways=WAYS, shots=shots, queries=2, seed=3, dtype=dtype)
    return sampler.sample_batch(start, count)


def _expected(rate: float, shots: int) -> int:
    return int(math.floor(rate * WAYS * shots + 0.5))


@settings(max_examples=60, deadline=None)
@given(shots=st.integers(1, 10), rate=st.floats(0, 1), seed=st.integers(0, 2**64 - 1),
       kind=st.sampled_from(["symmetric", "paired", "outlier"]))
def test_exact_count_spread_evenly_over_the_classes(data, shots, rate, seed, kind):
    batch = _batch(data, shots)
    noisy, counts = apply_label_noise(batch, kind, rate, seed=seed, dataset=data)
    n = _expected(rate, shots)
    assert counts.tolist() == [n] * len(batch)
    assert corrupted_items(rate, WAYS, shots) == n
    assert effective_rate(rate, WAYS, shots) == n / (WAYS * shots)
    if kind == "outlier":
        changed = (noisy.support_x != batch.support_x).flatten(2).any(2)
        assert torch.equal(noisy.support_y, batch.support_y)
    else:
        changed = noisy.support_y != batch.support_y
        assert torch.equal(noisy.support_x, batch.support_x)
    for b in range(len(batch)):
        per_class = sorted(torch.bincount(batch.support_y[b][changed[b]],
                                          minlength=WAYS).tolist())
        assert per_class == sorted([n // WAYS + (c < n % WAYS) for c in range(WAYS)])


@pytest.mark.parametrize("shots,rate,n", [(1, 0.09, 0), (1, 0.1, 1), (1, 0.4, 2),
                                          (5, 0.3, 8), (5, 0.5, 13), (4, 0.125, 3),
                                          (10, 1.0, 50), (3, 0.0, 0)])
def test_rounding_half_up(data, shots, rate, n):
    _, counts = apply_label_noise(_batch(data, shots, 1), "symmetric", rate)
    assert counts.tolist() == [n]


def test_one_shot_noise_corrupts_what_its_rate_says(data):
    # at 1 shot the rate counts whole classes: 0.4 of 5 classes have a wrong only example
    batch = _batch(data, 1, count=50)
    for kind in ("symmetric", "paired"):
        noisy, _ = apply_label_noise(batch, kind, 0.4, seed=2)
        assert ((noisy.support_y != batch.support_y).sum(1) == 2).all()
    # which classes lose their example varies over the episodes
    noisy, _ = apply_label_noise(batch, "symmetric", 0.4, seed=2)
    hit = (noisy.support_y != batch.support_y).any(0)
    assert bool(hit.all())


def test_classes_keep_a_clean_item_below_the_top_rate(data):
    shots = 4
    batch = _batch(data, shots, count=20)
    noisy, _ = apply_label_noise(batch, "symmetric", (shots - 1) / shots, seed=5)
    for b in range(len(batch)):
        clean = batch.support_y[b][noisy.support_y[b] == batch.support_y[b]]
        assert set(clean.tolist()) == set(range(WAYS))


def test_symmetric_labels_are_wrong_and_spread(data):
    batch = _batch(data, 10, count=40)
    noisy, _ = apply_label_noise(batch, "symmetric", 1.0, seed=7)
    assert bool((noisy.support_y != batch.support_y).all())
    # every wrong label occurs for every true label (uniform over the other ways)
    pairs = set(zip(batch.support_y.flatten().tolist(), noisy.support_y.flatten().tolist()))
    assert pairs == {(c, d) for c in range(WAYS) for d in range(WAYS) if c != d}


def test_paired_mapping(data):
    batch = _batch(data, 6)
    noisy, _ = apply_label_noise(batch, "paired", 0.5, seed=1)
    changed = noisy.support_y != batch.support_y
    assert torch.equal(noisy.support_y[changed], (batch.support_y[changed] + 1) % WAYS)


def test_outliers_come_from_classes_outside_the_episode(data):
    images, labels = data
    for dtype in ("uint8", "float32"):
        batch = _batch(data, 4, count=20, dtype=dtype)
        noisy, _ = apply_label_noise(batch, "outlier", 0.5, seed=2, dataset=data)
        changed = (noisy.support_x != batch.support_x).flatten(2).any(2)
        scale = 255 if dtype == "float32" else 1
        for b in range(len(batch)):
            src = (noisy.support_x[b][changed[b]].flatten(1)[:, 0].double() * scale).round()
            src_classes = set(labels[src.long().numpy()].tolist())
            assert src_classes.isdisjoint(batch.classes[b].tolist())
            assert noisy.support_x.dtype == batch.support_x.dtype


def test_outlier_accepts_an_image_dataset():
    ds = mr.data.glyphs(num_classes=12, per_class=8, seed=0, split="test")
    batch = mr.EpisodeSampler(ds, ways=WAYS, shots=3, queries=1, seed=0).sample_batch(0, 2)
    noisy, counts = apply_label_noise(batch, "outlier", 1.0, dataset=ds)
    assert counts.tolist() == [15, 15]
    assert bool((noisy.support_x != batch.support_x).flatten(2).any(2).all())


@pytest.mark.parametrize("kind", ["symmetric", "paired", "outlier"])
def test_deterministic_and_batch_split_independent(data, kind):
    whole = _batch(data, 5, count=6)
    a, _ = apply_label_noise(whole, kind, 0.6, seed=11, dataset=data)
    b, _ = apply_label_noise(whole, kind, 0.6, seed=11, dataset=data)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.support_y, b.support_y)
    # episodes 2..5 in their own batch (start=2) are noised the same way
    tail, _ = apply_label_noise(_batch(data, 5, count=4, start=2), kind, 0.6, seed=11,
                                start=2, dataset=data)
    assert torch.equal(a.support_x[2:], tail.support_x)
    assert torch.equal(a.support_y[2:], tail.support_y)
    # and a single episode equals its row of the batch
    one, count = apply_label_noise(whole[3], kind, 0.6, seed=11, start=3, dataset=data)
    assert torch.equal(one.support_y, a.support_y[3]) and int(count) == WAYS * 3
    c, _ = apply_label_noise(whole, kind, 0.6, seed=12, dataset=data)
    assert not (torch.equal(a.support_x, c.support_x) and torch.equal(a.support_y, c.support_y))


@pytest.mark.parametrize("kind", ["symmetric", "paired", "outlier"])
def test_support_only(data, kind):
    batch = _batch(data, 4)
    noisy, _ = apply_label_noise(batch, kind, 1.0, seed=0, dataset=data)
    assert torch.equal(noisy.query_x, batch.query_x)
    assert torch.equal(noisy.query_y, batch.query_y)
    assert torch.equal(noisy.classes, batch.classes)
    before = batch.support_x.clone(), batch.support_y.clone()
    apply_label_noise(batch, kind, 1.0, seed=0, dataset=data)
    assert torch.equal(batch.support_x, before[0]) and torch.equal(batch.support_y, before[1])


@pytest.mark.parametrize("rate", [-0.1, 1.01, float("nan"), float("inf")])
def test_bad_rate(data, rate):
    with pytest.raises(ValueError, match="rate"):
        apply_label_noise(_batch(data, 2), "symmetric", rate)


@pytest.mark.parametrize("rate", ["0.5", None, True, torch.tensor([0.1, 0.2])])
def test_rate_type(data, rate):
    with pytest.raises(TypeError, match="rate"):
        apply_label_noise(_batch(data, 2), "symmetric", rate)


def test_bad_kind_and_missing_dataset(data):
    with pytest.raises(ValueError, match=r"kind: expected one of symmetric, paired, outlier"):
        apply_label_noise(_batch(data, 2), "uniform", 0.5)
    with pytest.raises(ValueError, match="dataset: kind='outlier' needs the dataset"):
        apply_label_noise(_batch(data, 2), "outlier", 0.5)
    with pytest.raises(TypeError, match="batch: expected an Episode"):
        apply_label_noise((1, 2), "symmetric", 0.5)
    with pytest.raises(ValueError, match="seed"):
        apply_label_noise(_batch(data, 2), "symmetric", 0.5, seed=-1)


def test_outlier_needs_an_outside_class_and_matching_images(data):
    images, labels = data
    batch = _batch(data, 2)
    inside = np.isin(labels, batch.classes[0].numpy())
    with pytest.raises(ValueError, match="outside the episode"):
        apply_label_noise(batch[0], "outlier", 1.0, dataset=(images[inside], labels[inside]))
    with pytest.raises(ValueError, match="do not match"):
        apply_label_noise(batch, "outlier", 1.0,
                          dataset=(np.zeros((4, 1, 5, 5), np.uint8), np.arange(4)))


def test_one_way_has_no_wrong_label(data):
    batch = mr.EpisodeSampler(data, ways=1, shots=2, queries=1, seed=0).sample_batch(0, 1)
    with pytest.raises(ValueError, match="ways >= 2"):
        apply_label_noise(batch, "symmetric", 1.0)
    noisy, counts = apply_label_noise(batch, "symmetric", 0.0)
    assert counts.tolist() == [0] and torch.equal(noisy.support_y, batch.support_y)


def test_unbalanced_support_is_rejected(data):
    batch = _batch(data, 2, count=1)
    y = batch.support_y.clone()
    y[0, 0] = 1 - y[0, 0] if y[0, 0] < 2 else 0
    bad = mr.Episode(batch.support_x, y, batch.query_x, batch.query_y, batch.classes)
    with pytest.raises(ValueError, match="must appear 2 times"):
        apply_label_noise(bad, "paired", 0.5)


@pytest.mark.parametrize("prototype", ["mean", "median"])
def test_protonet_handles_a_class_emptied_by_noise(data, prototype):
    from metarobust.learners import ProtoNet

    learner = ProtoNet(torch.nn.Flatten(), prototype=prototype).eval()  # pixel embeddings
    batch = _batch(data, 1, count=30)
    noisy, _ = apply_label_noise(batch, "symmetric", 1.0, seed=0)
    present = torch.nn.functional.one_hot(noisy.support_y, WAYS).sum(1) > 0
    assert not bool(present.all())  # 1-shot, every label wrong: some class is left empty
    logits = learner.query_logits(noisy, WAYS)
    assert bool(torch.isneginf(logits[~present[:, None, :].expand_as(logits)]).all())
    pred = logits.argmax(-1)
    assert bool(present.gather(1, pred).all())  # never a class without support items
    acc = learner.evaluate_batch(noisy, WAYS)
    assert acc.shape == (30,) and bool(((acc >= 0) & (acc <= 1)).all())
    # the classes present: distances to their prototypes (median: NumPy's)
    se = noisy.support_x.flatten(2).double() / 255
    qe = noisy.query_x.flatten(2).double() / 255
    for t in range(30):
        for c in present[t].nonzero().flatten().tolist():
            proto = se[t][noisy.support_y[t] == c]
            proto = proto.mean(0) if prototype == "mean" else proto.quantile(0.5, dim=0)
            want = -((qe[t] - proto) ** 2).sum(1)
            torch.testing.assert_close(logits[t, :, c].double(), want, rtol=1e-4, atol=1e-4)
