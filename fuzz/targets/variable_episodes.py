"""Targets: ``mr.VariableEpisodeSampler`` (construction) and ``.sample_batch``: every
episode checked against its source (items of its classes, no item twice, labels grouped
``0..ways-1``, the procedure's bounds, padding -1) and ``sample_batch(s, n)[j] ==
sample(s + j)``."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Choice, Float, Int, Obj
from ..values import ints, num
from ._common import u64
from ._episodes import episode_dataset

FIELDS = ("support_x", "support_y", "query_x", "query_y", "classes", "ways", "source")
CALL = ("mr.VariableEpisodeSampler(sources, weights, seed=seed, dtype=dtype, "
        "min_ways=min_ways, max_ways=max_ways, max_support=max_support, "
        "max_support_per_class=max_support_per_class, "
        "max_query_per_class=max_query_per_class, min_log_weight=min_log_weight, "
        "max_log_weight=max_log_weight, layout='NCHW')")
ARGS = ("sources", "weights", "seed", "dtype", "min_ways", "max_ways", "max_support",
        "max_support_per_class", "max_query_per_class", "min_log_weight", "max_log_weight")


@st.composite
def sampler_kwargs(draw, draft):
    """A valid sampler's arguments into ``draft``; returns its facts."""
    n_src = draw(st.integers(1, 2))
    shape = None
    facts: dict = {"sources": []}
    exprs = []
    for k in range(n_src):
        images, labels, shp, ids = draw(episode_dataset(need=2))
        if shape is None:
            shape = shp[1:]
        images = images.replace(repr(shp), repr((len(labels), *shape)))
        draft.setup += [f"images{k} = {images}", f"labels{k} = {ints(labels)}"]
        exprs.append(f"(images{k}, labels{k})")
        facts["sources"].append(len(ids))
    min_classes = min(facts["sources"])
    lo = draw(st.integers(1, min_classes))
    hi = draw(st.integers(lo, lo + 4))
    draft.val("sources", exprs[0] if n_src == 1 and draw(st.booleans())
              else "[" + ", ".join(exprs) + "]")
    weights = draw(st.none() | st.lists(st.floats(0.1, 5), min_size=n_src, max_size=n_src))
    draft.val("weights", repr(weights))
    draft.val("seed", num(draw(u64)))
    dtype = draw(st.sampled_from(["float32", "uint8"]))
    draft.val("dtype", repr(dtype), value=dtype)
    for name, v in (("min_ways", lo), ("max_ways", hi),
                    ("max_support", draw(st.integers(hi, hi + 30))),
                    ("max_support_per_class", draw(st.integers(1, 6))),
                    ("max_query_per_class", draw(st.integers(1, 4)))):
        draft.val(name, num(v), value=v)
    a = draw(st.floats(-2, 2))
    draft.val("min_log_weight", repr(a))
    draft.val("max_log_weight", repr(a + draw(st.floats(0, 2))))
    facts.update(dtype=dtype, n_src=n_src, min_ways=lo, max_ways=hi)
    return facts


def check_episode(ep, env, facts):
    """One unpadded episode against its source."""
    src = int(ep.source)
    assert 0 <= src < facts["n_src"], f"source {src}"
    images, labels = env[f"images{src}"], np.asarray(env[f"labels{src}"])
    w = int(ep.ways)
    assert facts["min_ways"] <= w <= min(facts["max_ways"], facts["sources"][src]), f"ways {w}"
    cl = ep.classes.numpy()
    assert len(set(cl.tolist())) == w and set(cl.tolist()) <= set(labels.tolist()), cl
    used = []
    for x, y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
        y = y.numpy()
        assert (np.diff(y) >= 0).all() and set(y.tolist()) == set(range(w)), f"labels {y}"
        raw = x.numpy()
        if raw.dtype != np.uint8:
            raw = np.round(raw * 255).astype(np.uint8)
        for img, lab in zip(raw, y):
            hits = np.flatnonzero((images == img).all(axis=(1, 2, 3)) & (labels == cl[lab]))
            assert hits.size, "an item is no image of its class"
            used.append(img.tobytes())
    if len({im.tobytes() for im in images}) == len(images):
        assert len(used) == len(set(used)), "an item appears twice"


def check_sampler(result, args, meta):
    assert isinstance(result, mr.VariableEpisodeSampler), type(result)
    assert isinstance(repr(result), str)
    check_episode(result.sample(0), args, meta["facts"])


def _with_sampler(draw):
    draft = Draft()
    facts = draw(sampler_kwargs(draft))
    for k in ARGS:
        draft.setup.append(f"{k} = {draft.args.pop(k)}")
        draft.facts.pop(k, None)
    draft.setup.append(f"sampler = {CALL}")
    env = ["sampler"] + [f"{p}{k}" for k in range(facts["n_src"]) for p in ("images", "labels")]
    draft.meta = {"facts": facts, "env": env}
    return draft


@st.composite
def valid_sampler(draw):
    draft = Draft()
    facts = draw(sampler_kwargs(draft))
    draft.meta["facts"] = facts
    draft.meta["env"] = [f"{p}{k}" for k in range(facts["n_src"]) for p in ("images", "labels")]
    return draft


@st.composite
def valid_sample_batch(draw):
    draft = _with_sampler(draw)
    count = draw(st.integers(1, 4))
    start = draw(st.integers(0, 50) | st.integers(0, 2**64 - count))
    draft.val("start", num(start), value=start)
    draft.val("count", num(count), value=count)
    return draft


def check_sample_batch(result, args, meta):
    assert isinstance(result, mr.VariableEpisode), type(result)
    start = int(args["start"])
    assert len(result) == int(args["count"]), f"{len(result)} episodes"
    for j in range(len(result)):
        ep = result[j]
        check_episode(ep, args, meta["facts"])
        s = ep.support_y.shape[0]
        assert (result.support_y[j, s:] == -1).all(), "support padding is not -1"
        one = args["sampler"].sample(start + j)
        for f in FIELDS:
            assert torch.equal(getattr(ep, f), getattr(one, f)), f"episode {j}: {f} differs"


TAKE = ("def take(it, n):\n"
        "    with it:\n"
        "        return [next(it) for _ in range(n)]")


@st.composite
def valid_batches(draw):
    draft = _with_sampler(draw)
    draft.setup.insert(0, TAKE)
    for name, v in (("batch_size", draw(st.integers(1, 3))), ("start", draw(st.integers(0, 9))),
                    ("prefetch", draw(st.integers(1, 3)))):
        draft.val(name, num(v), value=v)
    n = draw(st.integers(1, 3))
    nb = draw(st.none() | st.integers(n, n + 2))
    draft.val("num_batches", repr(nb), value=nb)
    draft.setup.insert(1, f"n_take = {n}")
    draft.meta["take"] = n
    return draft


def check_batches(result, args, meta):
    assert isinstance(result, list) and len(result) == meta["take"], result
    bs, start = int(args["batch_size"]), int(args["start"])
    for k, batch in enumerate(result):
        want = args["sampler"].sample_batch(start + k * bs, bs)
        for f in FIELDS:
            assert torch.equal(getattr(batch, f), getattr(want, f)), f"batch {k}: {f} differs"


def sampler_breaks(draft):
    f = draft.meta["facts"]
    return [Break("min_ways", num(max(f["sources"]) + 1), "more ways than classes",
                  ("min_ways", "max_ways")),
            Break("max_ways", num(f["min_ways"] - 1), "max below min", ("max_ways",)),
            Break("max_support", num(f["max_ways"] - 1), "support below ways",
                  ("max_support",)),
            Break("min_log_weight", "9.0", "min above max", ("max_log_weight",)),
            Break("weights", repr([1.0] * (f["n_src"] + 1)), "one weight too many",
                  ("weights",)),
            Break("weights", repr([0.0] * f["n_src"]), "zero weights", ("weights",))]


def batch_breaks(draft):
    if draft.facts["count"]["value"] >= 2:
        return [Break("start", num(2**64 - 1), "last episode index overflows",
                      ("start", "count"))]
    return []


TARGETS = [
    Target(name="variable_episodes.VariableEpisodeSampler", call=CALL,
           params={"sources": Obj(), "weights": Obj(nullable=True),
                   "seed": Int(0, 2**64 - 1, huge="skip"), "dtype": Choice(("float32", "uint8")),
                   "min_ways": Int(1, related=("max_ways", "max_support")),
                   "max_ways": Int(1, huge="tolerated", related=("min_ways", "max_support")),
                   "max_support": Int(1, huge="tolerated", related=("max_ways",)),
                   "max_support_per_class": Int(1, huge="tolerated"),
                   "max_query_per_class": Int(1, huge="tolerated"),
                   "min_log_weight": Float(), "max_log_weight": Float()},
           valid=valid_sampler(), check=check_sampler, relational=sampler_breaks),
    Target(name="variable_episodes.sample_batch", call="sampler.sample_batch(start, count)",
           params={"start": Int(0, 2**64 - 1, huge="skip", related=("count",)),
                   "count": Int(1)},
           valid=valid_sample_batch(), check=check_sample_batch, relational=batch_breaks),
    Target(name="variable_episodes.batches",
           call=("take(sampler.batches(batch_size, start=start, prefetch=prefetch, "
                 "num_batches=num_batches), n_take)"),
           params={"batch_size": Int(1), "start": Int(0, huge="skip"),
                   "prefetch": Int(1, huge="skip"),
                   "num_batches": Int(0, nullable=True, huge="skip")},
           valid=valid_batches(), check=check_batches),
]
