"""Targets: ``mr.robust.auroc`` (checked against a count over every (known, unknown) pair,
ties counted half) and ``mr.robust.OpenSetSampler`` (the unknown queries come from classes
outside each episode)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Break, Draft, Target
from ..spec import Arr, Float, Int
from ..values import num

SCORE_DTYPES = ("float64", "float32", "float16", "int64", "int32", "uint8")


def _scores(seed: int, shape: tuple[int, ...], dtype: str) -> str:
    # rounded: many ties
    return (f"np.abs(np.round(np.random.default_rng({seed}).normal(size={shape}) * 2))"
            f".astype(np.{dtype})")


@st.composite
def valid_auroc(draw):
    batch = draw(st.sampled_from([None, 1, 2, 5]))
    n, m = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    draft = Draft()
    for name, size in (("known", n), ("unknown", m)):
        shape = (size,) if batch is None else (batch, size)
        dt = draw(st.sampled_from(SCORE_DTYPES))
        draft.arr(name, _scores(draw(st.integers(0, 999)), shape, dt), shape, dt)
    return draft


def check_auroc(result, args, meta):
    import torch

    k = np.atleast_2d(np.asarray(args["known"], dtype=np.float64))
    u = np.atleast_2d(np.asarray(args["unknown"], dtype=np.float64))
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float64, repr(result)
    got = np.atleast_1d(result.numpy())
    assert got.shape == (max(k.shape[0], u.shape[0]),), f"shape {got.shape}"
    for j, g in enumerate(got):
        a, b = k[min(j, len(k) - 1)], u[min(j, len(u) - 1)]
        want = ((a[:, None] > b[None]).sum() + 0.5 * (a[:, None] == b[None]).sum()) / (
            a.size * b.size)
        assert abs(g - want) < 1e-12, f"episode {j}: {g}, pairwise count {want}"


def auroc_breaks(draft):
    k, u = draft.facts["known"]["shape"], draft.facts["unknown"]["shape"]
    if len(k) == 2 and len(u) == 2:
        expr = f"np.concatenate([{draft.args['unknown']}] * 2)"
        return [Break("unknown", expr, "more episodes than known", ("known", "unknown"))]
    return []


class _Scores(Arr):
    """Scores: an array, and equally a tensor (so a tensor is no junk)."""

    def junk(self, name):
        return [b for b in super().junk(name) if b.how != "junk tensor"]


def _arr():
    return _Scores(dtypes=SCORE_DTYPES, ndims=(1, 2), contiguous="copied", lists="tolerated",
                   related=("known", "unknown"), empty=("broken", "broken"))


@st.composite
def valid_sampler(draw):
    ways, queries = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    fraction = draw(st.floats(0.0, 0.6))
    unknowns = int(np.floor(fraction / (1 - fraction) * ways * queries + 0.5))
    classes = ways + -(-unknowns // queries) + draw(st.integers(0, 2))
    draft = Draft()
    draft.setup.append(f"ds = mr.data.glyphs(num_classes={classes}, per_class={1 + queries}, "
                       f"image_size=8, seed={draw(st.integers(0, 99))})")
    draft.val("ways", num(ways), value=ways)
    draft.val("shots", "1", value=1)
    draft.val("queries", num(queries), value=queries)
    draft.val("unknown_fraction", repr(fraction), value=fraction)
    draft.meta = {"unknowns": unknowns}
    return draft


def check_sampler(result, args, meta):
    import metarobust as mr

    assert result.unknowns == meta["unknowns"], f"{result.unknowns} unknowns"
    b = result.sample_batch(0, 2)
    w, q = int(args["ways"]), int(args["queries"])
    assert b.episode.query_x.shape[1] == w * q and b.unknown_x.shape[1] == meta["unknowns"]
    assert isinstance(b, mr.robust.open_set.OpenSetBatch)


TARGETS = [
    Target(name="robust.auroc", call="mr.robust.auroc(known, unknown)",
           params={"known": _arr(), "unknown": _arr()},
           valid=valid_auroc(), check=check_auroc, relational=auroc_breaks),
    Target(name="robust.OpenSetSampler",
           call="mr.robust.OpenSetSampler(ds, ways=ways, shots=shots, queries=queries, "
                "unknown_fraction=unknown_fraction)",
           params={"ways": Int(1, 10**6), "shots": Int(1, 10**6), "queries": Int(1, 10**6),
                   "unknown_fraction": Float(0.0, 1.0, hi_open=True)},
           valid=valid_sampler(), check=check_sampler),
]
