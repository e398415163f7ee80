"""Targets: ``mr.robust.corrupt``, ``Augment`` (construction and call) and
``apply_label_noise``: results against ``_core.corrupt_into`` and the documented
label-noise counts and kinds (grids, corruption arguments and seeds: :mod:`.robust_grid`)."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

import metarobust as mr
from metarobust import _core

from ..case import Break, Draft, Target
from ..spec import Arr, Choice, Float, Int, Obj, Spec
from ..values import num
from ._common import u64
from .core_images import CORRUPTIONS, INKS, valid_corrupt

BATCH = ("ds = mr.data.glyphs(num_classes={k}, per_class={per}, image_size=8, seed={seed})\n"
         "batch = mr.EpisodeSampler(ds, ways={w}, shots={s}, queries={q}, seed={seed}, "
         "dtype={dt!r}).sample_batch({start}, {b})")
FIELDS = ("support_x", "support_y", "query_x", "query_y", "classes")


@st.composite
def episode_batch(draw, draft, min_ways=1, extra_classes=0):
    """Setup of ``ds`` and ``batch`` (an Episode batch of glyphs) and ``clean`` (a copy);
    the dataset has at least ``extra_classes`` classes more than an episode."""
    w, s = draw(st.integers(min_ways, 4)), draw(st.integers(1, 4))
    q, b = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = w + draw(st.integers(extra_classes, 2))
    dt = draw(st.sampled_from(["float32", "uint8"]))
    start = draw(st.integers(0, 30))
    draft.setup += BATCH.format(k=k, per=s + q, seed=draw(st.integers(0, 99)), w=w, s=s, q=q,
                                dt=dt, start=start, b=b).split("\n")
    draft.setup.append("clean = mr.Episode(*(t.clone() for t in batch.__dict__.values()))")
    return {"ways": w, "shots": s, "queries": q, "count": b, "dtype": dt, "start": start}


# ---------------------------------------------------------------- corrupt


def check_corrupt(result, args, meta):
    images = args["images"]
    assert isinstance(result, np.ndarray), type(result)
    assert result.dtype == images.dtype and result.shape == images.shape, result.shape
    want = np.empty_like(images)
    if images.size:
        _core.corrupt_into(np.ascontiguousarray(images), want, args["name"],
                           int(args["severity"]), int(args["seed"]), int(args["index"]),
                           args["ink"])
    assert np.array_equal(result, want), "differs from _core.corrupt_into"
    if result.dtype == np.float32 and result.size:
        assert 0 <= result.min() and result.max() <= 1, "values outside [0, 1]"


@st.composite
def valid_robust_corrupt(draw):
    draft = draw(valid_corrupt())
    draft.args.pop("out")
    draft.facts.pop("out")
    return draft


def corrupt_breaks(draft):
    x, f = draft.args["images"], draft.facts["images"]
    if f["dtype"] != "float32":
        return []
    return [Break("images", f"with_value({x}, {v}, 0)", "float outside [0, 1]", ("images",))
            for v in (1.5, -0.25)]


# ---------------------------------------------------------------- Augment


class Names(Spec):
    """Corruption names: a list, a comma-separated str or "all"."""

    junk_skip = frozenset({"list", "range", "set", "generator", "nested"})

    def breaks(self, draft, name):
        return [Break(name, e, h, (name,)) for e, h in (
            ("[]", "no names"), ("['bogus']", "an unknown name"), ("''", "an empty str"),
            ("'gaussian_blur,,thin'", "an empty item"), ("[None]", "None in the list"),
            ("'ALL'", "wrong case"))]


@st.composite
def augment_args(draw, draft):
    names = draw(st.lists(st.sampled_from(CORRUPTIONS), min_size=1, max_size=3, unique=True))
    form = draw(st.sampled_from(["list", "str", "all"]))
    draft.val("names", {"list": repr(names), "str": repr(",".join(names)),
                        "all": "'all'"}[form])
    for name, v in (("max_severity", draw(st.integers(1, 5))),
                    ("prob", draw(st.sampled_from([0.0, 1.0, 0.5]) | st.floats(0, 1))),
                    ("seed", draw(u64 | st.integers(0, 9)))):
        draft.val(name, num(v), value=v)
    draft.val("ink", repr(draw(st.sampled_from(INKS))))
    return list(CORRUPTIONS) if form == "all" else names


def check_augment(result, args, meta):
    assert isinstance(result, mr.robust.Augment), type(result)
    assert list(result.names) == meta["names"], result.names
    assert (result.max_severity, result.prob, result.seed) == (
        int(args["max_severity"]), float(args["prob"]), int(args["seed"]))
    for i in range(6):
        c = result.choice(i)
        assert c == result.choice(i), "choice() differs between calls"
        if c is not None:
            assert c[0] in meta["names"] and 1 <= c[1] <= int(args["max_severity"]), c
    if float(args["prob"]) == 0:
        assert all(result.choice(i) is None for i in range(6)), "prob=0 corrupts"


@st.composite
def valid_augment(draw):
    draft = Draft()
    draft.meta["names"] = draw(augment_args(draft))
    return draft


AUGMENT_CALL = "mr.robust.Augment(names, max_severity, prob, seed, ink)"


@st.composite
def valid_augment_call(draw):
    draft = Draft()
    draw(augment_args(draft))
    for k in ("names", "max_severity", "prob", "seed", "ink"):
        draft.setup.append(f"{k} = {draft.args.pop(k)}")
        draft.facts.pop(k, None)
    draft.setup.append(f"aug = {AUGMENT_CALL}")
    facts = draw(episode_batch(draft))
    single = draw(st.booleans())
    draft.val("batch", "batch[0]" if single else "batch")
    n = 1 if single else facts["count"]
    first = draw(st.integers(0, 50) | st.integers(0, 2**64 - n))
    draft.val("first_index", num(first), value=first)
    draft.meta = {"facts": facts, "single": single, "env": ["aug", "clean"]}
    return draft


def check_augment_call(result, args, meta):
    aug, clean, first = args["aug"], args["clean"], int(args["first_index"])
    assert result is args["batch"], "returns another object than the batch it corrupts"
    single = meta["single"]
    sx = result.support_x[None] if single else result.support_x
    qx = result.query_x[None] if single else result.query_x
    s = sx.shape[1]
    for j in range(sx.shape[0]):
        c_s, c_q = clean.support_x[j], clean.query_x[j]
        choice = aug.choice(first + j)
        if choice is None:
            want = torch.cat([c_s, c_q]).numpy()
        else:
            items = torch.cat([c_s, c_q]).numpy()
            want = np.empty_like(items)
            _core.corrupt_into(items, want, choice[0], choice[1], aug.seed, first + j, aug.ink)
        got = torch.cat([sx[j], qx[j]]).numpy()
        assert np.array_equal(got, want), f"episode {first + j}: {choice}"
        assert got[:s].shape == c_s.numpy().shape


def augment_call_breaks(draft):
    b = draft.args["batch"]
    out = [Break("batch", f"mr.Episode(*(t.double() if t.is_floating_point() else t for t in "
                 f"{b}.__dict__.values()))", "float64 images", ("batch", "images"),
                 tolerated=True),  # fine while no episode of it is drawn for corruption
           Break("batch", f"{b}.support_x", "a tensor, not an Episode", ("batch",))]
    if draft.meta["facts"]["count"] >= 2 and not draft.meta["single"]:
        out.append(Break("first_index", num(2**64 - 1), "last episode index overflows",
                         ("first_index", "index")))
    return out


# ---------------------------------------------------------------- label noise


@st.composite
def valid_label_noise(draw):
    draft = Draft()
    kind = draw(st.sampled_from(("symmetric", "paired", "outlier")))
    facts = draw(episode_batch(draft, min_ways=2, extra_classes=int(kind == "outlier")))
    single = draw(st.booleans()) and facts["count"] == 1
    draft.val("batch", "batch[0]" if single else "batch")
    draft.val("kind", repr(kind), value=kind)
    rate = draw(st.sampled_from([0.0, 1.0, 0.5]) | st.floats(0, 1))
    draft.val("rate", num(rate), value=rate)
    draft.val("seed", num(draw(u64 | st.integers(0, 9))))
    draft.val("start", num(facts["start"]), value=facts["start"])
    draft.val("dataset", draw(st.sampled_from(["ds", "(ds.images, ds.labels)"]))
              if kind == "outlier" else "None")
    draft.meta = {"facts": facts, "single": single, "env": ["clean", "ds"]}
    return draft


def check_label_noise(result, args, meta):
    f = meta["facts"]
    assert isinstance(result, tuple) and len(result) == 2, type(result)
    noisy, counts = result
    single, kind = meta["single"], args["kind"]
    clean, ds = args["clean"], args["ds"]
    w, s = f["ways"], f["shots"]
    # the rate is over the whole support set, spread evenly over the classes
    total = math.floor(float(args["rate"]) * w * s + 0.5)
    want_counts = torch.full((f["count"],), total, dtype=torch.int64)
    assert torch.equal(counts, want_counts[0] if single else want_counts), f"counts {counts}"
    for name in FIELDS:
        t = getattr(clean, name)
        assert torch.equal(getattr(args["batch"], name), t[0] if single else t), \
            f"the input batch's {name} changed"
    for name in ("query_x", "query_y", "classes"):
        t = getattr(clean, name)
        assert torch.equal(getattr(noisy, name), t[0] if single else t), f"{name} changed"
    sy = (noisy.support_y[None] if single else noisy.support_y).numpy()
    sx = (noisy.support_x[None] if single else noisy.support_x).numpy()
    for b in range(f["count"]):
        old, new = clean.support_y[b].numpy(), sy[b]
        moved = old != new if kind != "outlier" else \
            (sx[b] != clean.support_x[b].numpy()).reshape(len(old), -1).any(1)
        per_class = [int(moved[old == c].sum()) for c in range(w)]
        assert sum(per_class) == total and max(per_class) - min(per_class) <= 1, \
            f"episode {b}: {per_class} items corrupted per class, expected {total} spread evenly"
        for c in range(w):
            n = per_class[c]
            if kind == "symmetric":
                assert (new[old == c] != c).sum() == n, f"episode {b}: a label kept"
            elif kind == "paired":
                assert (new[(old == c) & moved] == (c + 1) % w).all(), f"episode {b}: paired"
        if kind == "outlier":
            assert (new == old).all(), "outlier noise changed labels"
            check_outliers(sx[b][moved], clean.classes[b].numpy(), ds, f["dtype"])


def check_outliers(images, episode_classes, ds, dtype):
    """Replaced support images are dataset images of classes outside the episode."""
    imgs = np.asarray(ds.images)
    for img in images:
        raw = img if dtype == "uint8" else np.round(img.astype(np.float64) * 255)
        hits = np.flatnonzero((imgs.reshape(len(imgs), -1) == raw.reshape(-1)).all(1))
        assert hits.size, "an outlier that is no dataset image"
        assert not np.isin(ds.labels[hits], episode_classes).all(), \
            "an outlier of a class in the episode"


def label_noise_breaks(draft):
    out = [Break("batch", "mr.Episode(batch.support_x, batch.support_y * 0, batch.query_x, "
                 "batch.query_y, batch.classes)", "unbalanced support labels",
                 ("batch", "support_y", "batch.support_y")),
           Break("batch", "(batch.support_x, batch.support_y)", "a tuple", ("batch",))]
    if draft.facts["kind"]["value"] == "outlier":  # (other kinds take no dataset)
        out += [Break("dataset", b.expr, b.how, ("dataset",)) for b in Obj().junk("dataset")
                if b.how != "junk none"]
        out += [Break("dataset", "None", "no dataset for outliers", ("dataset",)),
                Break("dataset", "(ds.images[:, :, :4], ds.labels)", "images of another shape",
                      ("dataset",)),
                ]
        f = draft.meta["facts"]
        if f["count"] == 1 and math.floor(draft.facts["rate"]["value"] * f["shots"] + 0.5):
            keep = "np.isin(ds.labels, clean.classes[0].numpy())"
            out.append(Break("dataset", f"(ds.images[{keep}], ds.labels[{keep}])",
                             "no class outside the episode", ("dataset",)))
    return out


class Unchecked(Spec):
    """An argument with no junk of its own: any object may be right (``arg``, a name put
    in messages) or its junk depends on another argument (the label-noise dataset)."""

    def junk(self, name):
        return []



TARGETS = [
    Target(name="robust.corrupt",
           call="mr.robust.corrupt(images, name, severity, seed=seed, index=index, ink=ink)",
           params={"images": Arr(("uint8", "float32"), (4,)), "name": Choice(CORRUPTIONS),
                   "severity": Int(1, 5), "seed": Int(0, 2**64 - 1, huge="skip"),
                   "index": Int(0, 2**64 - 1, huge="skip"), "ink": Choice(INKS)},
           valid=valid_robust_corrupt(), check=check_corrupt, relational=corrupt_breaks),
    Target(name="robust.Augment", call=AUGMENT_CALL,
           params={"names": Names(), "max_severity": Int(1, 5),
                   "prob": Float(0.0, 1.0), "seed": Int(0, 2**64 - 1, huge="skip"),
                   "ink": Choice(INKS)},
           valid=valid_augment(), check=check_augment),
    Target(name="robust.Augment.__call__", call="aug(batch, first_index)",
           params={"batch": Obj(), "first_index": Int(0, 2**64 - 1, huge="skip")},
           valid=valid_augment_call(), check=check_augment_call,
           relational=augment_call_breaks, outputs=("batch",)),
    Target(name="robust.apply_label_noise",
           call=("mr.robust.apply_label_noise(batch, kind, rate, seed=seed, start=start, "
                 "dataset=dataset)"),
           params={"batch": Obj(), "kind": Choice(("symmetric", "paired", "outlier")),
                   "rate": Float(0.0, 1.0), "seed": Int(0, 2**64 - 1, huge="skip"),
                   "start": Int(0, 2**64 - 1, huge="skip"), "dataset": Unchecked()},
           valid=valid_label_noise(), check=check_label_noise, relational=label_noise_breaks),
]
