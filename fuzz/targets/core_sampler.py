"""Targets: ``_core.SamplerCore`` (construction), its ``fill`` and ``cache_built``: episodes
checked against the dataset, ``fill(start, count)`` against one-episode fills, corrupted
episodes against ``corrupt_into`` of the clean episode."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from metarobust import _core

from ..case import Break, Draft, Target
from ..spec import Arr, Choice, Int, Spec
from ..values import ints, num, shape, zeros
from ._common import u64
from ._episodes import check_batch, episode_dataset

CORRUPTIONS = tuple(_core.CORRUPTIONS)


class Floats(Spec):
    """An optional list of floats, one or one per channel (``positive``: each > 0)."""

    nullable = True

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        c = draft.facts[name]["channels"]
        out = [Break(name, e, h, (name,)) for e, h in (
            ("[float('nan')]", "nan"), ("[float('inf')]", "inf"), ("[]", "empty list"),
            (repr([0.5] * (c + 1)), "one value too many"), ("['a']", "str values"),
            ("'0.5'", "str for list"))]
        if self.positive:
            out += [Break(name, "[0.0]", "zero std", (name,)),
                    Break(name, "[-1.0]", "negative std", (name,))]
        return out

    def junk(self, name: str) -> list[Break]:
        return [b for b in super().junk(name) if b.how not in ("junk list", "junk range",
                                                                "junk tensor", "junk nested")]


@st.composite
def sampler_args(draw, draft):
    """The arguments of a valid ``SamplerCore`` into ``draft``; returns the fill facts."""
    shots, queries = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    images, labels, shp, ids = draw(episode_dataset(need=shots + queries))
    chosen = draw(st.none() | st.lists(st.sampled_from(ids), min_size=1, unique=True))
    pool = chosen if chosen is not None else ids
    ways = draw(st.integers(1, len(pool)))
    draft.arr("images", images, shp, "uint8")
    draft.arr("labels", ints(labels), (len(labels),), "int64")
    draft.facts["labels"]["values"] = labels
    for name, v in (("ways", ways), ("shots", shots), ("queries", queries)):
        draft.val(name, num(v), value=v)
    draft.val("seed", num(draw(u64)))
    if chosen is None:
        draft.val("classes", "None")
    else:
        draft.arr("classes", ints(chosen), (len(chosen),), "int64")
    c = shp[1]
    mean = draw(st.none() | st.lists(st.floats(-1, 1), min_size=1, max_size=1)
                | st.lists(st.floats(-1, 1), min_size=c, max_size=c))
    std = draw(st.none() | st.lists(st.floats(0.05, 3), min_size=1, max_size=1)
               | st.lists(st.floats(0.05, 3), min_size=c, max_size=c))
    draft.val("mean", repr(mean), channels=c)
    draft.val("std", repr(std), channels=c)
    corruption = draw(st.none() | st.sampled_from(CORRUPTIONS))
    draft.val("corruption", repr(corruption))
    draft.val("severity", num(draw(st.integers(1, 5))))
    draft.val("corrupt", repr(draw(st.sampled_from(("query", "support", "both")))))
    draft.val("ink", repr(draw(st.sampled_from(("dark", "light")))))
    cache = draw(st.sampled_from([0, 1 << 20, 268435456, 2**62]))
    draft.val("cache_bytes", num(cache), value=cache)
    return {"ways": ways, "shots": shots, "queries": queries, "shape": shp[1:],
            "class_ids": sorted(pool), "mean": mean, "std": std, "corruption": corruption}


CORE_ARGS = ("images", "labels", "ways", "shots", "queries", "seed", "classes", "mean", "std",
             "corruption", "severity", "corrupt", "ink", "cache_bytes")
CORE_CALL = ("_core.SamplerCore(images, labels, ways, shots, queries, seed, classes, mean, "
             "std, corruption, severity, corrupt, ink, cache_bytes)")


def check_sampler(result, args, meta):
    f = meta["facts"]
    assert isinstance(result, _core.SamplerCore), type(result)
    for k in ("ways", "shots", "queries"):
        assert getattr(result, k) == f[k], f"{k}: {getattr(result, k)}, expected {f[k]}"
    assert result.seed == int(args["seed"]), f"seed {result.seed}"
    assert tuple(result.image_shape) == tuple(f["shape"]), f"image_shape {result.image_shape}"
    assert list(result.class_ids) == f["class_ids"], f"class_ids {result.class_ids}"


@st.composite
def valid_sampler(draw):
    draft = Draft()
    draft.meta["facts"] = draw(sampler_args(draft))
    return draft


def sampler_breaks(draft):
    """Breaks that need the dataset: too many ways, too few items, unknown classes."""
    f = draft.meta["facts"]
    lab = draft.facts["labels"]["values"]
    x = draft.args["labels"]
    out = [Break("ways", num(len(f["class_ids"]) + 1), "more ways than classes", ("ways",)),
           Break("shots", num(len(lab) + 1), "more shots than items",
                 ("shots", "queries")),
           Break("queries", num(len(lab)), "more queries than items", ("shots", "queries")),
           Break("labels", f"with_value({x}, -1, 0)", "negative label", ("labels",)),
           Break("labels", f"({x})[:-1]", "fewer labels than images", ("labels", "images")),
           Break("classes", ints([max(f["class_ids"]) + 1]), "class not in labels",
                 ("classes",)),
           Break("classes", ints([f["class_ids"][0]] * 2), "class listed twice", ("classes",)),
           Break("classes", "np.zeros(0, np.int64)", "no classes", ("classes",)),
           Break("images", f"np.zeros({shape((len(lab), 0, 2, 2))}, np.uint8)",
                 "empty images", ("images",))]
    return out


def _sampler_params():
    return {"images": Arr(("uint8",), (4,), related=("labels",), empty="broken",
                          aligned="tolerated"),
            "labels": Arr(("int64",), (1,), related=("images",), empty="broken"),
            "ways": Int(1, related=("classes", "labels")),
            "shots": Int(1, related=("queries", "labels", "ways")),
            "queries": Int(0, related=("shots", "labels", "ways")),
            "seed": Int(0, 2**64 - 1, huge="skip"),
            "classes": Arr(("int64",), (1,), related=("labels",), empty="broken",
                           nullable=True),
            "mean": Floats(), "std": Floats(positive=True),
            "corruption": Choice(CORRUPTIONS, nullable=True),
            "severity": Int(1, 5),
            "corrupt": Choice(("query", "support", "both")),
            "ink": Choice(("dark", "light")),
            "cache_bytes": Int(0, 2**64 - 1, huge="skip")}


@st.composite
def valid_fill(draw):
    draft = Draft()
    f = draw(sampler_args(draft))
    draft.setup.append(f"sampler = {CORE_CALL}")
    for k in CORE_ARGS:  # the sampler's arguments become setup, not the call's
        draft.setup.insert(len(draft.setup) - 1, f"{k} = {draft.args.pop(k)}")
        draft.facts.pop(k, None)
    count = draw(st.integers(1, 4))
    start = draw(st.integers(0, 100) | st.integers(0, 2**64 - count))
    # uint8 output takes no mean/std (it is the raw bytes)
    raw = f["mean"] is None and f["std"] is None
    dt = draw(st.sampled_from(["float32", "uint8"] if raw else ["float32"]))
    w, s, q, shp = f["ways"], f["shots"], f["queries"], f["shape"]
    draft.val("start", num(start), value=start)
    draft.val("count", num(count), value=count)
    for name, shape_, d in (("support_x", (count, w * s, *shp), dt),
                            ("support_y", (count, w * s), "int64"),
                            ("query_x", (count, w * q, *shp), dt),
                            ("query_y", (count, w * q), "int64"),
                            ("classes", (count, w), "int64")):
        draft.arr(name, zeros(shape_, d), shape_, d)
    draft.meta = {"facts": f, "env": ["sampler", "images", "labels", "seed", "severity",
                                      "corrupt", "ink"]}
    return draft


FILL_OUT = ("support_x", "support_y", "query_x", "query_y", "classes")


def check_fill(result, args, meta):
    f = meta["facts"]
    assert result is None, f"returned {type(result).__name__}"
    out = [args[k] for k in FILL_OUT]
    where = {"query": ("query",), "support": ("support",), "both": ("support", "query")}
    corrupted = where[args["corrupt"]] if f["corruption"] else ()
    check_batch(out, args["images"], args["labels"], f["ways"], f["shots"], f["queries"],
                f["class_ids"], f["mean"], f["std"], corrupted)
    sampler, start = args["sampler"], int(args["start"])
    for j in range(int(args["count"])):  # episode start + j alone, as sample(i) makes it
        one = [np.zeros((1, *a.shape[1:]), a.dtype) for a in out]
        sampler.fill(start + j, 1, *one)
        for name, a, b in zip(FILL_OUT, out, one):
            assert np.array_equal(a[j], b[0]), f"{name}[{j}] differs from fill({start + j}, 1)"
    if f["corruption"] and (f["mean"] is None and f["std"] is None or out[0].dtype == np.uint8):
        check_corrupted(out, args, f, start)


def check_corrupted(out, args, f, start):
    """Item j of corrupted episode i is ``corrupt_into`` of the clean episode's items."""
    clean = _core.SamplerCore(args["images"], args["labels"], f["ways"], f["shots"],
                              f["queries"], int(args["seed"]),
                              None if f["class_ids"] is None else np.array(f["class_ids"]),
                              f["mean"], f["std"])
    ref = [np.zeros_like(a) for a in out]
    clean.fill(start, ref[0].shape[0], *ref)
    ns = out[0].shape[1]
    for b in range(out[0].shape[0]):
        items = np.ascontiguousarray(np.concatenate([ref[0][b], ref[2][b]]))
        want = np.empty_like(items)
        _core.corrupt_into(items, want, f["corruption"], int(args["severity"]),
                           int(args["seed"]), start + b, str(args["ink"]))
        if args["corrupt"] in ("support", "both"):
            assert np.array_equal(out[0][b], want[:ns]), f"episode {b}: corrupted support"
        if args["corrupt"] in ("query", "both"):
            assert np.array_equal(out[2][b], want[ns:]), f"episode {b}: corrupted queries"


def fill_breaks(draft):
    out = []
    count = draft.facts["count"]["value"]
    out.append(Break("start", num(2**64 - 1), "last episode index overflows",
                     ("start", "count")) if count >= 2 else
               Break("count", "2", "more episodes than outputs", ("count", "support_x")))
    out.append(Break("count", num(count + 1), "more episodes than outputs",
                     ("count", "support_x", "support_y", "query_x", "query_y", "classes")))
    for name in FILL_OUT:
        shp, d = draft.facts[name]["shape"], draft.facts[name]["dtype"]
        bigger = [shp[0] + 1, *shp[1:]]
        out.append(Break(name, zeros(bigger, d), "one more episode than count",
                         (name, "count")))
        if len(shp) > 2:
            other = "uint8" if d == "float32" else "float32"
            out.append(Break(name, zeros(shp, other), "image dtypes differ",
                             ("support_x", "query_x")))
    sx, qx = draft.facts["support_x"]["shape"], draft.facts["query_x"]["shape"]
    if draft.facts["classes"]["shape"] == draft.facts["support_y"]["shape"]:
        out.append(Break("classes", "support_y.view()", "aliases support_y",
                         ("classes", "support_y")))
    d = draft.facts["support_x"]["dtype"]
    if sx[2] != sx[3]:  # the same size, channels and height swapped
        swapped = [sx[0], sx[1], sx[3], sx[2], sx[4]]
        out.append(Break("support_x", zeros(swapped, d), "image axes swapped",
                         ("support_x",)))
    if sx == qx:
        out.append(Break("query_x", "support_x.view()", "aliases support_x",
                         ("query_x", "support_x")))
    return out


def _fill_params():
    img = ("float32", "uint8")
    return {"start": Int(0, 2**64 - 1, huge="skip", related=("count",)),
            "count": Int(0, related=FILL_OUT),
            "support_x": Arr(img, (5,), role="out", finite=False, linked=("query_x",),
                             related=("count",), empty="broken"),
            "support_y": Arr(("int64",), (2,), role="out", related=("count",),
                             empty="broken"),
            "query_x": Arr(img, (5,), role="out", finite=False, linked=("support_x",),
                           related=("count",), empty="broken"),
            "query_y": Arr(("int64",), (2,), role="out", related=("count",), empty="broken"),
            "classes": Arr(("int64",), (2,), role="out", related=("count",), empty="broken")}


@st.composite
def valid_cache_built(draw):
    draft = Draft()
    f = draw(sampler_args(draft))
    draft.setup.append(f"sampler = {CORE_CALL}")
    for k in CORE_ARGS:
        draft.setup.insert(len(draft.setup) - 1, f"{k} = {draft.args.pop(k)}")
        draft.facts.pop(k, None)
    dt = draw(st.sampled_from(["float32", "uint8"]))
    draft.val("dtype", repr(dt), value=dt)
    draft.meta = {"facts": f}
    return draft


def check_cache_built(result, args, meta):
    assert isinstance(result, bool), f"{type(result).__name__}, not bool"
    assert result is False, "a cache is built before any episode was sampled"


TARGETS = [
    Target(name="core.SamplerCore", call=CORE_CALL, params=_sampler_params(),
           valid=valid_sampler(), check=check_sampler, relational=sampler_breaks),
    Target(name="core.SamplerCore.fill",
           call="sampler.fill(start, count, support_x, support_y, query_x, query_y, classes)",
           params=_fill_params(), valid=valid_fill(), check=check_fill,
           relational=fill_breaks, outputs=FILL_OUT),
    Target(name="core.SamplerCore.cache_built", call="sampler.cache_built(dtype)",
           params={"dtype": Choice(("float32", "uint8"))}, valid=valid_cache_built(),
           check=check_cache_built),
]
