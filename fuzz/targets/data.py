"""Targets: ``mr.data.glyphs``, ``ImageDataset``, ``sinusoid`` (and its ``sample`` and
``sample_batch``) and ``load``: datasets checked against their documented form (glyphs
against the core renderer at the documented class ids, sinusoid tasks against NumPy's
Philox stream), and caches against the dataset saved, or refused when damaged."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

import metarobust as mr
from metarobust import _core

from ..case import Break, Draft, Target
from ..spec import Arr, Bool, Choice, Int, Obj, Path, Spec
from ..values import ints, num, pixels
from ._common import u64

SPLITS = ("train", "val", "test")


def check_glyphs(result, args, meta):
    n, per, size = int(args["num_classes"]), int(args["per_class"]), int(args["image_size"])
    split, seed = str(args["split"]), int(args["seed"])
    assert isinstance(result, mr.data.ImageDataset), type(result)
    ids = np.arange(n, dtype=np.int64) + _core.GLYPH_SPLIT_OFFSETS[split]
    want = _core.render_glyphs(seed, ids, per, size)
    assert result.images.dtype == np.uint8 and result.images.flags.c_contiguous
    assert np.array_equal(result.images, want), "images differ from the renderer's"
    assert np.array_equal(result.labels, np.repeat(np.arange(n), per)), "labels"
    assert result.labels.dtype == np.int64, result.labels.dtype
    assert result.class_names == [f"glyph-{split}-{k}" for k in range(n)], "class names"
    m = result.metadata
    assert (m["source"], m["split"], m["seed"], m["num_classes"], m["per_class"],
            m["image_size"]) == ("glyphs", split, seed, n, per, size), f"metadata {m}"


@st.composite
def valid_glyphs(draw):
    draft = Draft()
    for name, v in (("num_classes", draw(st.integers(1, 5))),
                    ("per_class", draw(st.integers(1, 3))),
                    ("image_size", draw(st.sampled_from([8, 28]) | st.integers(8, 33))),
                    ("seed", draw(u64 | st.integers(0, 9)))):
        draft.val(name, num(v), value=v)
    split = draw(st.sampled_from(SPLITS))
    draft.val("split", repr(split), value=split)
    return draft


def check_dataset(result, args, meta):
    images, labels = np.asarray(args["images"]), np.asarray(args["labels"])
    assert isinstance(result, mr.data.ImageDataset), type(result)
    assert result.images.dtype == np.uint8 and result.images.flags.c_contiguous
    assert np.array_equal(result.images, images), "images changed"
    assert result.labels.dtype == np.int64 and np.array_equal(result.labels, labels), "labels"
    names = args["class_names"]
    want = list(names) if names is not None else \
        [str(i) for i in range(int(labels.astype(np.int64).max(initial=-1)) + 1)]
    assert result.class_names == want, f"class_names {result.class_names[:5]}"
    assert result.num_classes == len(want) and len(result) == images.shape[0]
    assert result.image_shape == tuple(images.shape[1:]), result.image_shape
    assert result.metadata == (args["metadata"] or {}), result.metadata


@st.composite
def valid_dataset(draw):
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = draw(st.integers(1, 4))
    labels = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    draft = Draft()
    draft.arr("images", pixels((n, c, h, w), draw(st.integers(0, 99))), (n, c, h, w), "uint8")
    ldt = draw(st.sampled_from(["int64", "int32", "uint8", "int16"]))
    draft.arr("labels", ints(labels, ldt), (n,), ldt)
    draft.facts["labels"]["values"] = labels
    names = draw(st.none() | st.just([f"c{i}" for i in range(k)]))
    draft.val("class_names", repr(names), value=names)
    draft.val("metadata", repr(draw(st.none() | st.just({"source": "fuzz", "n": n}))))
    return draft


def dataset_breaks(draft):
    x = draft.args["labels"]
    labels = draft.facts["labels"]["values"]
    out = [Break("labels", f"np.array({x}, dtype=np.int64) * 0 - 1", "negative labels",
                 ("labels",)),
           Break("labels", f"np.array({x})[:-1]", "one label short", ("labels", "images")),
           Break("labels", f"np.array({x}, dtype=np.float64)", "float labels", ("labels",)),
           Break("class_names", "['a', 'a'] + [str(i) for i in range(99)]",
                 "repeated names", ("class_names",)),
           Break("class_names", "'abc'", "a str", ("class_names",)),
           Break("class_names", f"[str(i) for i in range({max(labels)})]",
                 "fewer names than labels", ("class_names", "labels")),
           Break("class_names", f"[1] + [str(i) for i in range({max(labels) + 1})]",
                 "an int name", ("class_names",)),
           Break("metadata", "[('a', 1)]", "a list", ("metadata",))]
    return out


class Names(Spec):
    """Class names: None or strings (numpy's str_ are strings)."""

    nullable = True
    junk_skip = frozenset({"list", "range", "set", "dict", "generator", "str_array"})


def check_task(got, args, seed, i, shots, queries):
    """Task ``i`` against ``Philox(key=seed, counter=[0, i, 0, 0])`` drawn in the
    documented order."""
    rng = np.random.Generator(np.random.Philox(key=seed, counter=np.array([0, i, 0, 0],
                                                                       dtype=np.uint64)))
    amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, math.pi)
    x = rng.uniform(-5.0, 5.0, size=shots + queries)
    y = amp * np.sin(x - phase)
    want = (x[:shots], y[:shots], x[shots:], y[shots:])
    for name, t, w in zip(("support_x", "support_y", "query_x", "query_y"), got[:4], want):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32, f"{name}: {t!r}"
        assert tuple(t.shape) == (len(w), 1), f"{name}: shape {tuple(t.shape)}"
        assert np.array_equal(t.numpy()[:, 0], w.astype(np.float32)), f"task {i}: {name}"
    assert float(got.amplitude) == np.float32(amp) and float(got.phase) == np.float32(phase)


def check_sinusoid(result, args, meta):
    assert isinstance(result, mr.data.SinusoidTasks), type(result)
    s, q, seed = int(args["shots"]), int(args["queries"]), int(args["seed"])
    assert (result.shots, result.queries, result.seed) == (s, q, seed)
    check_task(result.sample(3), args, seed, 3, s, q)


def check_sample(result, args, meta):
    t = args["tasks"]
    check_task(result, args, t.seed, int(args["i"]), t.shots, t.queries)


def check_sample_batch(result, args, meta):
    t, start, count = args["tasks"], int(args["start"]), int(args["count"])
    assert tuple(result.support_x.shape) == (count, t.shots, 1), result.support_x.shape
    for j in range(count):
        one = type(result)(*(f[j] for f in result))
        check_task(one, args, t.seed, start + j, t.shots, t.queries)


def _sinusoid_draft(draw, with_tasks):
    draft = Draft()
    s, q, seed = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(u64 | st.integers(0, 9))
    if with_tasks:
        draft.setup.append(f"tasks = mr.data.sinusoid({s}, {q}, {num(seed)})")
        draft.meta["env"] = ["tasks"]
    else:
        for name, v in (("shots", s), ("queries", q), ("seed", seed)):
            draft.val(name, num(v), value=v)
    return draft


@st.composite
def valid_sinusoid(draw):
    return _sinusoid_draft(draw, False)


@st.composite
def valid_sinusoid_sample(draw):
    draft = _sinusoid_draft(draw, True)
    i = draw(u64 | st.integers(0, 20))
    draft.val("i", num(i), value=i)
    return draft


@st.composite
def valid_sinusoid_batch(draw):
    draft = _sinusoid_draft(draw, True)
    count = draw(st.integers(0, 4))
    start = draw(st.integers(0, 20) | st.integers(0, 2**64 - max(count, 1)))
    draft.val("start", num(start), value=start)
    draft.val("count", num(count), value=count)
    return draft


def _sinusoid_batch_breaks(draft):
    if draft.facts["count"]["value"] < 2:
        return []
    return [Break("start", num(2**64 - 1), "last task index overflows", ("start", "count"))]


SAVE = ("def save(ds):\n"
        "    path = os.path.join(tmp, 'cache')\n"
        "    ds.save(path)\n"
        "    return path")
DAMAGE = {
    "truncated images.npy": ("*images.npy", "f = os.path.join(path_, 'images.npy')\n"
                             "os.truncate(f, os.path.getsize(f) - 1)"),
    "padded labels.npy": ("*labels.npy", "with open(os.path.join(path_, 'labels.npy'), 'ab') "
                          "as f:\n    f.write(b'\\0')"),
    "a flipped data byte": ("*images.npy", "f = os.path.join(path_, 'images.npy')\n"
                            "b = bytearray(open(f, 'rb').read())\nb[-1] ^= 1\n"
                            "open(f, 'wb').write(bytes(b))"),
    "sidecar not JSON": ("*dataset.json", "open(os.path.join(path_, 'dataset.json'), 'w')"
                         ".write('{not json')"),
    "sidecar version 2": ("*dataset.json", "import json\nf = os.path.join(path_, "
                          "'dataset.json')\nd = json.load(open(f))\nd['version'] = 2\n"
                          "json.dump(d, open(f, 'w'))"),
    "labels saved as int32": ("*labels.npy", "f = os.path.join(path_, 'labels.npy')\n"
                              "np.save(f, np.load(f).astype(np.int32))"),
    "images.npy missing": ("*images.npy", "os.remove(os.path.join(path_, 'images.npy'))"),
    "sidecar shape wrong": ("*dataset.json", "import json\nf = os.path.join(path_, "
                            "'dataset.json')\nd = json.load(open(f))\n"
                            "d['arrays']['images']['shape'][0] += 1\n"
                            "json.dump(d, open(f, 'w'))"),
}


@st.composite
def valid_load(draw):
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    draft = Draft()
    labels = [i % k for i in range(n)]
    draft.setup += [SAVE, f"ds = mr.data.ImageDataset({pixels((n, 1, 3, 4), 7)}, "
                          f"{labels!r}, metadata={{'source': 'fuzz'}})",
                    "path_ = save(ds)"]
    form = draw(st.sampled_from(["path_", "pathlib.Path(path_)",
                                 "os.path.join(path_, 'dataset.json')"]))
    if form.startswith("pathlib"):
        draft.setup.insert(0, "import pathlib")
    draft.val("path", form)
    draft.val("mmap", repr(draw(st.booleans())))
    draft.val("verify", "True")
    draft.meta["env"] = ["ds"]
    return draft


def load_breaks(draft):
    out = [Break("path", draft.args["path"], f"cache with {how}", ("path", "=value", name),
                 setup=(stmt,)) for how, (name, stmt) in DAMAGE.items()]
    out.append(Break("path", "os.path.join(path_, 'images.npy')", "a file, not a cache",
                     ("path", "=value")))
    return out


def check_load(result, args, meta):
    ds = args["ds"]
    assert isinstance(result, mr.data.ImageDataset), type(result)
    assert np.array_equal(np.asarray(result.images), ds.images), "images differ"
    assert np.array_equal(np.asarray(result.labels), ds.labels), "labels differ"
    assert result.class_names == ds.class_names and result.metadata == ds.metadata


TARGETS = [
    Target(name="data.glyphs",
           call="mr.data.glyphs(num_classes, per_class, image_size, seed, split)",
           params={"num_classes": Int(1, 2**32, related=("per_class", "image_size")),
                   "per_class": Int(1, 2**63 - 1, related=("num_classes", "image_size")),
                   "image_size": Int(8, 512), "seed": Int(0, 2**64 - 1, huge="skip"),
                   "split": Choice(SPLITS)},
           valid=valid_glyphs(), check=check_glyphs),
    Target(name="data.ImageDataset",
           call="mr.data.ImageDataset(images, labels, class_names, metadata)",
           params={"images": Arr(("uint8",), (4,), contiguous="copied", related=("labels",),
                                 empty=("broken", "tolerated", "tolerated", "tolerated")),
                   "labels": Arr(("int64", "int32", "uint8", "int16"), (1,),
                                 contiguous="copied", related=("images",), empty="broken",
                                 lists="tolerated"),
                   "class_names": Names(),
                   "metadata": Obj(nullable=True, junk_skip=frozenset({"dict"}))},
           valid=valid_dataset(), check=check_dataset, relational=dataset_breaks),
    Target(name="data.sinusoid", call="mr.data.sinusoid(shots, queries, seed)",
           params={"shots": Int(1), "queries": Int(1), "seed": Int(0, 2**64 - 1, huge="skip")},
           valid=valid_sinusoid(), check=check_sinusoid),
    Target(name="data.sinusoid.sample", call="tasks.sample(i)",
           params={"i": Int(0, 2**64 - 1, huge="skip")}, valid=valid_sinusoid_sample(),
           check=check_sample),
    Target(name="data.sinusoid.sample_batch", call="tasks.sample_batch(start, count)",
           params={"start": Int(0, 2**64 - 1, huge="skip", related=("count",)),
                   "count": Int(0, related=("start",))},
           valid=valid_sinusoid_batch(), check=check_sample_batch,
           relational=_sinusoid_batch_breaks),
    Target(name="data.load", call="mr.data.load(path, mmap=mmap, verify=verify)",
           params={"path": Path(), "mmap": Bool(strict=False), "verify": Bool(strict=False)},
           valid=valid_load(), check=check_load, relational=load_breaks,
           rejects=("FileNotFoundError",)),
]
