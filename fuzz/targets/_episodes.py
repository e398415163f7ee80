"""Episode datasets and the check of sampled episodes, shared by the ``SamplerCore`` and
``EpisodeSampler`` targets: classes distinct and eligible, labels grouped ``0..ways-1``,
every item an image of its episode class (after the float conversion), no item twice in
an episode."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ._common import seeds


@st.composite
def episode_dataset(draw, need=1):
    """``(images expr, labels list, shape, class ids)``: a small uint8 dataset whose classes
    have at least ``need`` items, labelled with arbitrary non-negative class ids."""
    k = draw(st.integers(1, 6))
    ids = draw(st.lists(st.integers(0, 12) | st.integers(0, 2**40), min_size=k, max_size=k,
                        unique=True))
    counts = [draw(st.integers(need, need + 3)) for _ in range(k)]
    labels = [c for c, n in zip(ids, counts) for _ in range(n)]
    labels = list(draw(st.permutations(labels)))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, 9))
    w = draw(st.integers(2, 9))
    shape = (len(labels), c, h, w)
    return (f"np.random.default_rng({draw(seeds)}).integers(0, 256, {shape!r}, "
            f"dtype=np.uint8)"), labels, shape, sorted(ids)


def _as_bytes(images, x, mean, std):
    """Episode items ``x (n, C, H, W)`` back to uint8 values (undoing ``/ 255`` and
    ``(v - mean) / std``)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x, np.zeros(x.shape)
    c = x.shape[1]
    m = np.broadcast_to(np.asarray(mean if mean is not None else [0.0], np.float64), (c,))
    s = np.broadcast_to(np.asarray(std if std is not None else [1.0], np.float64), (c,))
    v = (x.astype(np.float64) * s[None, :, None, None] + m[None, :, None, None]) * 255
    q = np.round(v)
    return q.clip(0, 255).astype(np.uint8), np.abs(v - q)


def check_batch(out, images, labels, ways, shots, queries, class_ids, mean=None, std=None,
                corrupted=()):
    """Checks a batch ``out = (support_x, support_y, query_x, query_y, classes)`` of numpy
    arrays against the dataset; ``corrupted``: the item sets ("support", "query") whose
    images a corruption changed (their pixels are not looked up)."""
    sx, sy, qx, qy, cl = (np.asarray(a) for a in out)
    images, labels = np.asarray(images), np.asarray(labels)
    count = sy.shape[0]
    assert sx.shape == (count, ways * shots, *images.shape[1:]), f"support_x {sx.shape}"
    assert qx.shape == (count, ways * queries, *images.shape[1:]), f"query_x {qx.shape}"
    assert cl.shape == (count, ways), f"classes {cl.shape}"
    assert sy.shape == (count, ways * shots), f"support_y {sy.shape}"
    assert qy.shape == (count, ways * queries), f"query_y {qy.shape}"
    if sx.dtype != np.uint8:
        assert np.isfinite(sx).all() and np.isfinite(qx).all(), "non-finite pixels"
    lookup: dict[bytes, list[int]] = {}
    for i, img in enumerate(images):
        lookup.setdefault(img.tobytes(), []).append(i)
    unique = len(lookup) == len(images)
    for b in range(count):
        assert len(set(cl[b].tolist())) == ways, f"episode {b}: classes repeat: {cl[b]}"
        assert set(cl[b].tolist()) <= set(class_ids), f"episode {b}: classes {cl[b]} not " \
            f"all eligible ({class_ids})"
        assert (sy[b] == np.repeat(np.arange(ways), shots)).all(), f"support_y {sy[b]}"
        assert (qy[b] == np.repeat(np.arange(ways), queries)).all(), f"query_y {qy[b]}"
        used = []
        for part, x, y in (("support", sx[b], sy[b]), ("query", qx[b], qy[b])):
            if part in corrupted or not unique:
                continue
            raw, err = _as_bytes(images, x, mean, std)
            assert err.max(initial=0) < 0.02, f"episode {b}: {part} pixels are not dataset " \
                f"values (off by {err.max():.3g} levels)"
            for j, img in enumerate(raw):
                hits = lookup.get(img.tobytes())
                assert hits, f"episode {b}: {part} item {j} is no dataset image"
                assert labels[hits[0]] == cl[b, y[j]], f"episode {b}: {part} item {j} of " \
                    f"class {labels[hits[0]]}, its label's class is {cl[b, y[j]]}"
                used.append(hits[0])
        assert len(used) == len(set(used)), f"episode {b}: an item appears twice"
