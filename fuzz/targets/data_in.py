"""Targets: ``mr.data.from_arrays`` (images checked against NumPy: uint8 kept, floats as
``rint(x * 255)`` in float64, NHWC transposed) and ``mr.EpisodeSampler`` over float32
feature vectors (every row an item of its episode class, batches equal to single
episodes)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Arr, Choice, Int, Obj
from ..values import ints, num
from ._common import u64

IMAGE_DTYPES = ("uint8", "float32", "float64", "float16")


def _np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_from_arrays(result, args, meta):
    x, labels = _np(args["images"]), _np(args["labels"])
    assert isinstance(result, mr.data.ImageDataset), type(result)
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W): one channel, as documented
    elif args["layout"] == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    want = x if x.dtype == np.uint8 else np.rint(x.astype(np.float64) * 255).astype(np.uint8)
    assert result.images.dtype == np.uint8 and result.images.flags.c_contiguous
    assert result.images.shape == want.shape, f"shape {result.images.shape} != {want.shape}"
    assert np.array_equal(result.images, want), "images differ from rint(x * 255)"
    assert np.array_equal(result.labels, labels.astype(np.int64)), "labels"


@st.composite
def valid_from_arrays(draw):
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    layout = draw(st.sampled_from([None, "NCHW", "NHWC"]))
    if layout is None and w in (1, 3) and c not in (1, 3) and w < h:
        layout = "NCHW"  # looks NHWC: say what it is
    shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
    dt = draw(st.sampled_from(IMAGE_DTYPES))
    seed = draw(st.integers(0, 99))
    expr = (f"np.random.default_rng({seed}).integers(0, 256, {shape!r}, dtype=np.uint8)"
            if dt == "uint8" else
            f"np.random.default_rng({seed}).random({shape!r}).astype(np.{dt})")
    draft = Draft()
    draft.arr("images", expr, shape, dt)
    labels = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    ldt = draw(st.sampled_from(["int64", "int32", "uint8"]))
    draft.arr("labels", ints(labels, ldt), (n,), ldt)
    draft.val("layout", repr(layout), value=layout)
    return draft


def from_arrays_breaks(draft):
    x = draft.args["images"]
    out = [Break("labels", f"np.array({draft.args['labels']})[:-1]", "one label short",
                 ("labels", "images"))]
    if draft.facts["images"]["dtype"] != "uint8":
        out += [Break("images", f"({x}) * 2 + 1.5", "floats above 1", ("images",)),
                Break("images", f"({x}) - 1.5", "floats below 0", ("images",))]
    return out


def check_features(result, args, meta):
    feats, labels = _np(args["features"]), _np(args["labels"])
    f = meta["facts"]
    assert isinstance(result, mr.EpisodeSampler), type(result)
    assert result.image_shape == (feats.shape[1],), result.image_shape
    assert list(result.class_ids) == f["class_ids"], result.class_ids
    ep = result.sample(0)
    w, s, q = f["ways"], f["shots"], f["queries"]
    assert ep.support_x.shape == (w * s, feats.shape[1]), ep.support_x.shape
    assert ep.query_x.shape == (w * q, feats.shape[1]), ep.query_x.shape
    assert ep.support_x.dtype == torch.float32
    for x, y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
        for row, label in zip(x.numpy(), y.tolist()):
            cls = int(ep.classes[label])
            assert cls in f["class_ids"], f"class {cls}"
            hits = (feats == row).all(axis=1) & (labels == cls)
            assert hits.any(), f"a row of class {cls} that is not one of its items"
    b = result.sample_batch(3, 2)
    for field in ("support_x", "query_x", "classes", "support_y"):
        assert torch.equal(getattr(b[1], field), getattr(result.sample(4), field)), field


@st.composite
def valid_features(draw):
    shots, queries = draw(st.integers(1, 3)), draw(st.integers(0, 3))
    k = draw(st.integers(1, 5))
    labels = [c for c in range(k) for _ in range(draw(st.integers(shots + queries, 6)))]
    labels = draw(st.permutations(labels))
    n, d = len(labels), draw(st.integers(1, 8) | st.integers(9, 300))
    draft = Draft()
    draft.arr("features", f"np.random.default_rng({draw(st.integers(0, 99))})"
                          f".standard_normal(({n}, {d})).astype(np.float32)", (n, d), "float32")
    draft.arr("labels", ints(list(labels)), (n,), "int64")
    chosen = draw(st.none() | st.lists(st.integers(0, k - 1), min_size=1, unique=True))
    pool = sorted(chosen) if chosen is not None else list(range(k))
    ways = draw(st.integers(1, len(pool)))
    for name, v in (("ways", ways), ("shots", shots), ("queries", queries)):
        draft.val(name, num(v), value=v)
    draft.val("seed", num(draw(u64)))
    draft.val("classes", repr(chosen))
    draft.meta["facts"] = {"ways": ways, "shots": shots, "queries": queries,
                           "class_ids": pool}
    return draft


def feature_breaks(draft):
    x = draft.args["features"]
    return [Break("features", f"({x}).astype(np.float64)", "float64 features",
                  ("features",)),
            Break("ways", num(len(draft.meta["facts"]["class_ids"]) + 1),
                  "more ways than classes", ("ways",)),
            Break("shots", "1000", "more shots than items", ("shots", "queries"))]


class Labels(Arr):
    """from_arrays' labels: any integer sequence, a ``range`` included."""

    junk_skip = frozenset({"range"})


TARGETS = [
    Target(name="data.from_arrays",
           call="mr.data.from_arrays(images, labels, layout=layout)",
           params={"images": Arr(IMAGE_DTYPES, (3, 4), related=("labels", "layout"),
                                 contiguous="copied", lists="tolerated"),
                   "labels": Labels(("int64", "int32", "uint8", "int16"), (1,),
                                    related=("images",), empty="broken", lists="tolerated",
                                    contiguous="copied"),
                   "layout": Choice(("NCHW", "NHWC"), nullable=True)},
           valid=valid_from_arrays(), check=check_from_arrays, relational=from_arrays_breaks),
    Target(name="episodes.EpisodeSampler_features",
           call=("mr.EpisodeSampler(features, labels, ways=ways, shots=shots, "
                 "queries=queries, seed=seed, classes=classes)"),
           params={"features": Arr(("float32",), (2,), related=("labels",),
                                   empty=("broken", "broken"), lists="tolerated"),
                   "labels": Arr(("int64",), (1,), related=("features",), empty="broken",
                                 lists="tolerated"),
                   "ways": Int(1, related=("classes",)), "shots": Int(1, related=("queries",)),
                   "queries": Int(0, related=("shots",)),
                   "seed": Int(0, 2**64 - 1, huge="skip"), "classes": Obj(nullable=True)},
           valid=valid_features(), check=check_features, relational=feature_breaks),
]
