"""Targets: ``mr.EpisodeSampler`` (construction), ``.sample``, ``.sample_batch`` and
``.batches``: episodes checked against the dataset, ``sample(i) == sample_batch(i, 1)[0]``,
``sample_batch(s, n)[j] == sample(s + j)``, batches equal to ``sample_batch`` at their
starts, and a pickled sampler sampling the same episodes."""

from __future__ import annotations

import pickle

import torch
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Arr, Bool, Choice, Float, Int, Obj, Spec
from ..values import ints, num
from ._common import u64
from ._episodes import check_batch, episode_dataset

CORRUPTIONS = tuple(mr.robust.CORRUPTIONS)
FIELDS = ("support_x", "support_y", "query_x", "query_y", "classes")


class MeanStd(Spec):
    """``mean``/``std``: None, one number or one per channel (``positive``: std > 0)."""

    nullable = True
    junk_skip = frozenset({"float", "np_float", "true", "negative", "huge", "list", "range"})

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        c = draft.facts[name]["channels"]
        out = [Break(name, e, h, (name,)) for e, h in (
            ("float('nan')", "nan"), ("[float('inf')]", "inf"), ("[]", "empty list"),
            (repr([0.5] * (c + 1)), "one value too many"), ("'0.5'", "str"))]
        if self.positive:
            out += [Break(name, "0.0", "zero std", (name,)), Break(name, "-1.0", "negative std",
                                                                  (name,))]
        return out


@st.composite
def sampler_kwargs(draw, draft):
    """The arguments of a valid EpisodeSampler into ``draft``; returns its facts."""
    shots, queries = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    images, labels, shp, ids = draw(episode_dataset(need=shots + queries))
    draft.setup += [f"images = {images}", f"labels_arr = {ints(labels)}"]
    form = draw(st.sampled_from(["tuple", "labels", "dataset"]))
    if form == "dataset" and max(ids) < 64:
        draft.setup.append("ds = mr.data.ImageDataset(images, labels_arr)")
        draft.val("dataset", "ds")
        draft.val("labels", "None")
    elif form == "labels":
        draft.val("dataset", "images")
        draft.arr("labels", "labels_arr", (len(labels),), "int64")
    else:
        draft.val("dataset", "(images, labels_arr)")
        draft.val("labels", "None")
    chosen = draw(st.none() | st.lists(st.sampled_from(ids), min_size=1, unique=True))
    pool = chosen if chosen is not None else ids
    ways = draw(st.integers(1, len(pool)))
    for name, v in (("ways", ways), ("shots", shots), ("queries", queries)):
        draft.val(name, num(v), value=v)
    draft.val("seed", num(draw(u64)))
    dtype = draw(st.sampled_from(["float32", "uint8"]))
    draft.val("dtype", repr(dtype), value=dtype)
    c = shp[1]
    mean = std = None
    if dtype == "float32":
        mean = draw(st.none() | st.floats(-1, 1) | st.lists(st.floats(-1, 1), min_size=c,
                                                             max_size=c))
        std = draw(st.none() | st.floats(0.05, 3) | st.lists(st.floats(0.05, 3), min_size=c,
                                                              max_size=c))
    draft.val("mean", repr(mean), channels=c)
    draft.val("std", repr(std), channels=c)
    draft.val("classes", repr(chosen))
    # an image narrower than tall with 1 or 3 columns and 2 channels looks NHWC: say NCHW
    looks_nhwc = shp[3] in (1, 3) and shp[1] not in (1, 3) and shp[3] < shp[2]
    layout = "NCHW" if looks_nhwc else draw(st.sampled_from([None, "NCHW"]))
    draft.val("layout", repr(layout), value=layout)
    corruption = draw(st.none() | st.sampled_from(CORRUPTIONS))
    draft.val("corruption", repr(corruption))
    sev, target, ink = 3, "query", "dark"
    if corruption is not None:
        sev = draw(st.integers(1, 5))
        target = draw(st.sampled_from(("query", "support", "both")))
        ink = draw(st.sampled_from(("dark", "light")))
    draft.val("severity", num(sev), value=sev)
    draft.val("corrupt", repr(target))
    draft.val("ink", repr(ink))
    cache = draw(st.sampled_from([0, 1, 256, 0.5]))
    draft.val("corruption_cache_mb", num(cache), value=float(cache))
    return {"ways": ways, "shots": shots, "queries": queries, "class_ids": sorted(pool),
            "mean": mean, "std": std, "corruption": corruption, "corrupt": target,
            "dtype": dtype, "shape": list(shp[1:])}


SAMPLER_CALL = ("mr.EpisodeSampler(dataset, labels, ways=ways, shots=shots, queries=queries, "
                "seed=seed, dtype=dtype, mean=mean, std=std, classes=classes, "
                "corruption=corruption, severity=severity, corrupt=corrupt, ink=ink, "
                "corruption_cache_mb=corruption_cache_mb, layout=layout)")
SAMPLER_ARGS = ("dataset", "labels", "ways", "shots", "queries", "seed", "dtype", "mean",
                "std", "classes", "corruption", "severity", "corrupt", "ink",
                "corruption_cache_mb", "layout")


def episode_arrays(ep, batched):
    """The fields of an Episode as numpy arrays with a leading batch dimension."""
    return [getattr(ep, f).numpy() if batched else getattr(ep, f).numpy()[None]
            for f in FIELDS]


def check_episodes(ep, env, facts, batched):
    assert isinstance(ep, mr.Episode), f"a {type(ep).__name__}, not an Episode"
    want = torch.float32 if facts["dtype"] == "float32" else torch.uint8
    assert ep.support_x.dtype == want and ep.query_x.dtype == want, ep.support_x.dtype
    where = {"query": ("query",), "support": ("support",), "both": ("support", "query")}
    corrupted = where[facts["corrupt"]] if facts["corruption"] else ()
    check_batch(episode_arrays(ep, batched), env["images"], env["labels_arr"], facts["ways"],
                facts["shots"], facts["queries"], facts["class_ids"], facts["mean"],
                facts["std"], corrupted)


def same_episode(what, a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.shape == y.shape and torch.equal(x, y), f"{what}: {f} differs"


def check_sampler(result, args, meta):
    f = meta["facts"]
    assert isinstance(result, mr.EpisodeSampler), type(result)
    for k in ("ways", "shots", "queries"):
        assert getattr(result, k) == f[k], f"{k}: {getattr(result, k)}"
    assert list(result.class_ids) == f["class_ids"], f"class_ids {result.class_ids}"
    assert list(result.image_shape) == f["shape"], f"image_shape {result.image_shape}"
    assert isinstance(repr(result), str)
    ep = result.sample(0)
    check_episodes(ep, args, f, batched=False)
    again = pickle.loads(pickle.dumps(result))
    same_episode("a pickled sampler's episode 0", ep, again.sample(0))


def sampler_breaks(draft):
    f = draft.meta["facts"]
    out = [Break("ways", num(len(f["class_ids"]) + 1), "more ways than classes", ("ways",)),
           Break("shots", "1000", "more shots than items", ("shots", "queries")),
           Break("classes", repr([max(f["class_ids"]) + 1]), "class not in labels",
                 ("classes",)),
           Break("classes", "[0.5]", "float class ids", ("classes",)),
           Break("dataset", "(torch.from_numpy(images), torch.from_numpy(labels_arr))",
                 "tensors", ("dataset",), tolerated=True),
           Break("dataset", "(images.astype(np.float32), labels_arr)", "float images",
                 ("dataset", "images")),
           Break("dataset", "(images, labels_arr[:-1])", "fewer labels than images",
                 ("dataset", "labels")),
           Break("dataset", "(images, labels_arr.astype(np.float64))", "float labels",
                 ("dataset", "labels")),
           Break("dataset", "(images,)", "a 1-tuple", ("dataset",))]
    if f["corruption"] is None:
        out += [Break("severity", "4", "severity without a corruption", ("severity",)),
                Break("ink", "'light'", "ink without a corruption", ("ink",))]
    if f["dtype"] == "uint8":
        out.append(Break("mean", "0.5", "mean with uint8 output", ("mean", "std", "dtype")))
    return out


def _sampler_params():
    return {"dataset": Obj(), "labels": Arr(("int64",), (1,), related=("dataset",),
                                            empty="broken", nullable=True, aligned="tolerated",
                                            lists="tolerated"),
            "ways": Int(1, related=("classes",)), "shots": Int(1, related=("queries",)),
            "queries": Int(0, related=("shots",)), "seed": Int(0, 2**64 - 1, huge="skip"),
            "dtype": Choice(("float32", "uint8")), "mean": MeanStd(),
            "std": MeanStd(positive=True), "classes": Obj(nullable=True),
            "corruption": Choice(CORRUPTIONS, nullable=True), "severity": Int(1, 5),
            "corrupt": Choice(("query", "support", "both")), "ink": Choice(("dark", "light")),
            "corruption_cache_mb": Float(0.0),
            "layout": Choice(("NCHW", "NHWC"), nullable=True)}


@st.composite
def valid_sampler(draw):
    draft = Draft()
    draft.meta["facts"] = draw(sampler_kwargs(draft))
    draft.meta["env"] = ["images", "labels_arr"]
    return draft


def _with_sampler(draw):
    """A draft whose setup builds a valid sampler named ``sampler``."""
    draft = Draft()
    facts = draw(sampler_kwargs(draft))
    for k in SAMPLER_ARGS:
        draft.setup.append(f"{k} = {draft.args.pop(k)}")
        draft.facts.pop(k, None)
    draft.setup.append(f"sampler = {SAMPLER_CALL}")
    draft.meta = {"facts": facts, "env": ["sampler", "images", "labels_arr"]}
    return draft


@st.composite
def valid_sample(draw):
    draft = _with_sampler(draw)
    i = draw(st.integers(0, 50) | u64)
    draft.val("index", num(i), value=i)
    return draft


def check_sample(result, args, meta):
    check_episodes(result, args, meta["facts"], batched=False)
    i = int(args["index"])
    same_episode(f"sample({i}) against sample_batch({i}, 1)[0]", result,
                 args["sampler"].sample_batch(i, 1)[0])


@st.composite
def valid_sample_batch(draw):
    draft = _with_sampler(draw)
    count = draw(st.integers(1, 4))
    start = draw(st.integers(0, 50) | st.integers(0, 2**64 - count))
    draft.val("start", num(start), value=start)
    draft.val("count", num(count), value=count)
    draft.val("pin_memory", "False")
    return draft


def check_sample_batch(result, args, meta):
    check_episodes(result, args, meta["facts"], batched=True)
    start = int(args["start"])
    assert len(result) == int(args["count"]), f"{len(result)} episodes"
    for j in range(len(result)):
        same_episode(f"sample_batch({start}, n)[{j}] against sample({start + j})", result[j],
                     args["sampler"].sample(start + j))


def batch_breaks(draft):
    out = [Break("pin_memory", "True", "pinned memory (needs an accelerator)",
                 ("pin_memory",), tolerated=True)]
    if draft.facts["count"]["value"] >= 2:
        out.append(Break("start", num(2**64 - 1), "last episode index overflows",
                         ("start", "count")))
    return out


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
    stride = draw(st.none() | st.integers(1, 5))
    draft.val("stride", repr(stride), value=stride)
    draft.val("transform", draw(st.sampled_from(["None", "(lambda b, i: b)"])))
    draft.setup.insert(1, f"n_take = {n}")
    draft.meta["take"] = n
    return draft


def check_batches(result, args, meta):
    assert isinstance(result, list) and len(result) == meta["take"], result
    bs, start = int(args["batch_size"]), int(args["start"])
    stride = bs if args["stride"] is None else int(args["stride"])
    for k, batch in enumerate(result):
        check_episodes(batch, args, meta["facts"], batched=True)
        same_episode(f"batch {k}", batch, args["sampler"].sample_batch(start + k * stride, bs))


class CallableOrNone(Spec):
    """A callable or None: a non-callable is bad."""

    nullable = True
    junk_skip = frozenset({"lambda", "type", "exception"})


TARGETS = [
    Target(name="episodes.EpisodeSampler", call=SAMPLER_CALL, params=_sampler_params(),
           valid=valid_sampler(), check=check_sampler, relational=sampler_breaks),
    Target(name="episodes.sample", call="sampler.sample(index)",
           params={"index": Int(0, 2**64 - 1, huge="skip")}, valid=valid_sample(),
           check=check_sample),
    Target(name="episodes.sample_batch", call="sampler.sample_batch(start, count, pin_memory)",
           params={"start": Int(0, 2**64 - 1, huge="skip", related=("count",)),
                   "count": Int(1), "pin_memory": Bool(strict=False)},
           valid=valid_sample_batch(), check=check_sample_batch, relational=batch_breaks),
    Target(name="episodes.batches",
           call=("take(sampler.batches(batch_size, start=start, prefetch=prefetch, "
                 "num_batches=num_batches, stride=stride, transform=transform), n_take)"),
           params={"batch_size": Int(1), "start": Int(0, huge="skip"),
                   "prefetch": Int(1, huge="skip"), "num_batches": Int(0, nullable=True,
                                                                      huge="skip"),
                   "stride": Int(1, nullable=True, huge="skip"), "transform": CallableOrNone()},
           valid=valid_batches(), check=check_batches),
]
