"""Targets: ``_core.FeatureSamplerCore`` (construction) and its ``fill``: every row checked
against a NumPy gather of the items that ``_core.SamplerCore`` draws for the same labels,
seed and classes (images that hold their item index), ``fill(start, count)`` against
one-episode fills."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from metarobust import _core

from ..case import Break, Draft, Target
from ..spec import Arr, Int, Obj
from ..values import ints, num, zeros
from ._common import u64
from ._episodes import episode_dataset

FILL_OUT = ("support_x", "support_y", "query_x", "query_y", "classes")
CORE_ARGS = ("features", "labels", "ways", "shots", "queries", "seed", "classes")
CORE_CALL = "_core.FeatureSamplerCore(features, labels, ways, shots, queries, seed, classes)"


@st.composite
def feature_args(draw, draft):
    """The arguments of a valid ``FeatureSamplerCore`` into ``draft``; returns its facts."""
    shots, queries = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    _, labels, _, ids = draw(episode_dataset(need=shots + queries))
    chosen = draw(st.none() | st.lists(st.sampled_from(ids), min_size=1, unique=True))
    pool = chosen if chosen is not None else ids
    ways = draw(st.integers(1, len(pool)))
    n, d = len(labels), draw(st.integers(1, 8) | st.integers(9, 200))
    draft.arr("features", f"np.random.default_rng({draw(st.integers(0, 99))})"
                          f".standard_normal(({n}, {d})).astype(np.float32)", (n, d), "float32")
    draft.arr("labels", ints(labels), (n,), "int64")
    for name, v in (("ways", ways), ("shots", shots), ("queries", queries)):
        draft.val(name, num(v), value=v)
    draft.val("seed", num(draw(u64)))
    if chosen is None:
        draft.val("classes", "None")
    else:
        draft.arr("classes", ints(chosen), (len(chosen),), "int64")
    return {"ways": ways, "shots": shots, "queries": queries, "dim": d,
            "class_ids": sorted(pool)}


def reference(features, labels, seed, f, start, count):
    """The outputs of episodes ``start .. start + count``: the image sampler's draws over
    images holding their item index, then a NumPy gather of the features."""
    n = labels.shape[0]
    images = np.zeros((n, 2, 1, 1), np.uint8)
    images[:, 0, 0, 0], images[:, 1, 0, 0] = np.arange(n) // 256, np.arange(n) % 256
    # the eligible classes, sorted: the same draws as the sampler's classes (or None: all)
    core = _core.SamplerCore(images, labels, f["ways"], f["shots"], f["queries"], seed,
                             np.array(f["class_ids"], np.int64))
    w, s, q = f["ways"], f["shots"], f["queries"]
    out = [np.zeros((count, w * s, 2, 1, 1), np.uint8), np.zeros((count, w * s), np.int64),
           np.zeros((count, w * q, 2, 1, 1), np.uint8), np.zeros((count, w * q), np.int64),
           np.zeros((count, w), np.int64)]
    core.fill(start, count, *out)
    ids = [x[..., 0, 0, 0].astype(np.int64) * 256 + x[..., 1, 0, 0] for x in (out[0], out[2])]
    return [features[ids[0]], out[1], features[ids[1]], out[3], out[4]]


def check_sampler(result, args, meta):
    f = meta["facts"]
    assert isinstance(result, _core.FeatureSamplerCore), type(result)
    assert (result.ways, result.shots, result.queries) == (f["ways"], f["shots"], f["queries"])
    assert result.feature_dim == f["dim"] and list(result.class_ids) == f["class_ids"]


@st.composite
def valid_sampler(draw):
    draft = Draft()
    draft.meta["facts"] = draw(feature_args(draft))
    return draft


def sampler_breaks(draft):
    f = draft.meta["facts"]
    x = draft.args["features"]
    return [Break("ways", num(len(f["class_ids"]) + 1), "more ways than classes", ("ways",)),
            Break("shots", "1000", "more shots than items", ("shots", "queries")),
            Break("features", f"({x})[:-1]", "one row short", ("features", "labels")),
            Break("classes", repr([max(f["class_ids"]) + 1]), "class not in labels",
                  ("classes",))]


@st.composite
def valid_fill(draw):
    draft = Draft()
    f = draw(feature_args(draft))
    draft.setup.append(f"sampler = {CORE_CALL}")
    for k in CORE_ARGS:  # the sampler's arguments become setup, not the call's
        draft.setup.insert(len(draft.setup) - 1, f"{k} = {draft.args.pop(k)}")
        draft.facts.pop(k, None)
    count = draw(st.integers(1, 4))
    start = draw(st.integers(0, 100) | st.integers(0, 2**64 - count))
    w, s, q, d = f["ways"], f["shots"], f["queries"], f["dim"]
    draft.val("start", num(start), value=start)
    draft.val("count", num(count), value=count)
    for name, shape_, dt in (("support_x", (count, w * s, d), "float32"),
                             ("support_y", (count, w * s), "int64"),
                             ("query_x", (count, w * q, d), "float32"),
                             ("query_y", (count, w * q), "int64"),
                             ("classes", (count, w), "int64")):
        draft.arr(name, zeros(shape_, dt), shape_, dt)
    draft.meta = {"facts": f, "env": ["sampler", "features", "labels", "seed"]}
    return draft


def check_fill(result, args, meta):
    f = meta["facts"]
    assert result is None, f"returned {type(result).__name__}"
    out = [args[k] for k in FILL_OUT]
    start, count = int(args["start"]), int(args["count"])
    want = reference(args["features"], args["labels"], int(args["seed"]), f, start, count)
    for name, a, b in zip(FILL_OUT, out, want):
        assert np.array_equal(a, b), f"{name} differs from the NumPy gather of the draws"
    for j in range(count):
        one = [np.zeros((1, *a.shape[1:]), a.dtype) for a in out]
        args["sampler"].fill(start + j, 1, *one)
        for name, a, b in zip(FILL_OUT, out, one):
            assert np.array_equal(a[j], b[0]), f"{name}[{j}] differs from fill({start + j}, 1)"


def fill_breaks(draft):
    count = draft.facts["count"]["value"]
    out = [Break("start", num(2**64 - 1), "last episode index overflows", ("start", "count"))
           if count >= 2 else
           Break("count", "2", "more episodes than outputs", ("count", "support_x")),
           Break("count", num(count + 1), "more episodes than outputs",
                 ("count", *FILL_OUT))]
    for name in FILL_OUT:
        shp, d = draft.facts[name]["shape"], draft.facts[name]["dtype"]
        out.append(Break(name, zeros([shp[0] + 1, *shp[1:]], d), "one more episode than count",
                         (name, "count")))
    sx, qx = draft.facts["support_x"]["shape"], draft.facts["query_x"]["shape"]
    out.append(Break("support_x", zeros([*sx[:2], sx[2] + 1], "float32"), "one more dimension",
                     ("support_x",)))
    if sx == qx:
        out.append(Break("query_x", "support_x.view()", "aliases support_x",
                         ("query_x", "support_x")))
    return out


def _out(dims, dtype="int64"):
    return Arr((dtype,), (dims,), role="out", related=("count",), empty="broken",
               finite=False)


TARGETS = [
    Target(name="core.FeatureSamplerCore", call=CORE_CALL,
           params={"features": Arr(("float32",), (2,), related=("labels",),
                                   empty=("broken", "broken")),
                   "labels": Arr(("int64",), (1,), related=("features",), empty="broken"),
                   "ways": Int(1, related=("classes",)), "shots": Int(1, related=("queries",)),
                   "queries": Int(0, related=("shots",)),
                   "seed": Int(0, 2**64 - 1, huge="skip"), "classes": Obj(nullable=True)},
           valid=valid_sampler(), check=check_sampler, relational=sampler_breaks),
    Target(name="core.FeatureSamplerCore.fill",
           call="sampler.fill(start, count, support_x, support_y, query_x, query_y, classes)",
           params={"start": Int(0, 2**64 - 1, huge="skip", related=("count",)),
                   "count": Int(0, related=FILL_OUT),
                   "support_x": _out(3, "float32"), "support_y": _out(2),
                   "query_x": _out(3, "float32"), "query_y": _out(2), "classes": _out(2)},
           valid=valid_fill(), check=check_fill, relational=fill_breaks, outputs=FILL_OUT),
]
