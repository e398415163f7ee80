"""Targets: the image functions of ``_core``: ``render_glyphs``, ``corrupt_into``,
``corruption_info`` and ``num_threads``. Their results have no independent reference, so
the checks are the documented properties: shapes, ranges, determinism, prefixes, items
independent of each other, and uint8 results equal to the rounded float32 ones."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from metarobust import _core

from ..case import Break, Draft, Target
from ..spec import Arr, Choice, Int, Spec
from ..values import ints, num, pixels, uniform01, zeros
from ._common import arr_type, seeds, u64

CORRUPTIONS = tuple(_core.CORRUPTIONS)
INKS = ("dark", "light")


def check_glyphs(result, args, meta):
    classes, per, size = np.asarray(args["classes"]), int(args["per_class"]), \
        int(args["image_size"])
    arr_type("glyphs", result, np.uint8, (classes.size * per, 1, size, size))
    seed = int(args["seed"])
    again = _core.render_glyphs(seed, classes, per, size)
    assert np.array_equal(result, again), "two renders differ"
    if classes.size and per < 4:
        more = _core.render_glyphs(seed, classes, per + 1, size).reshape(
            classes.size, per + 1, 1, size, size)
        assert np.array_equal(result.reshape(classes.size, per, 1, size, size),
                              more[:, :per]), "per_class=k is not a prefix of per_class=k+1"
    if classes.size >= 2:
        tail = _core.render_glyphs(seed, classes[1:], per, size)
        assert np.array_equal(result[per:], tail), "a class's images depend on the others"


@st.composite
def valid_glyphs(draw):
    n = draw(st.integers(1, 4))
    ids = draw(st.lists(st.integers(0, 3 * 2**32) | st.integers(0, 20) | st.integers(0, 2**62),
                        min_size=n, max_size=n))
    draft = Draft()
    draft.val("seed", num(draw(u64)))
    draft.arr("classes", ints(ids), (n,), "int64")
    per = draw(st.integers(1, 3))
    draft.val("per_class", num(per), value=per)
    size = draw(st.sampled_from([8, 28, 9, 17]) | st.integers(8, 40))
    draft.val("image_size", num(size), value=size)
    return draft


def _glyph_breaks(draft):
    x = draft.args["classes"]
    return [Break("classes", f"with_value({x}, -1, 0)", "negative class id", ("classes",)),
            Break("classes", f"with_value({x}, -(2**63), 0)", "negative class id",
                  ("classes",)),
            Break("image_size", num(_core.GLYPH_MIN_SIZE - 1), "below min size",
                  ("image_size",)),
            Break("image_size", num(_core.GLYPH_MAX_SIZE + 1), "above max size",
                  ("image_size",))]


def check_corrupt(result, args, meta):
    images, out = args["images"], args["out"]
    assert result is None, f"returned {type(result).__name__}, not None"
    arr_type("out", out, images.dtype, images.shape)
    a = (args["name"], int(args["severity"]), int(args["seed"]), int(args["index"]),
         str(args["ink"]))
    if out.dtype == np.float32:
        assert np.isfinite(out).all() and out.min(initial=0) >= 0 and out.max(initial=0) <= 1, \
            f"values outside [0, 1]: {out.min()}..{out.max()}"
    again = np.empty_like(out)
    _core.corrupt_into(np.ascontiguousarray(images), again, *a)
    assert np.array_equal(out, again, equal_nan=True), "two runs differ"
    if images.shape[0] >= 2:  # item j depends on images[j] alone
        other = np.array(images, copy=True)
        other[0] = other[0][::-1] if other.dtype == np.uint8 else 1 - other[0]
        third = np.empty_like(out)
        _core.corrupt_into(other, third, *a)
        assert np.array_equal(out[1:], third[1:]), "items depend on other items"
    if images.dtype == np.uint8 and images.size:
        f = np.empty(images.shape, np.float32)
        _core.corrupt_into((images / np.float32(255)).astype(np.float32), f, *a)
        want = np.floor(255 * f.astype(np.float64) + 0.5)
        diff = np.abs(out.astype(np.int64) - want)
        assert diff.max() <= 1, f"uint8 result {diff.max()} levels from the float one"


@st.composite
def valid_corrupt(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.sampled_from([28, 8]) | st.integers(1, 40))
    w = draw(st.just(h) | st.integers(1, 40))
    dt = draw(st.sampled_from(["uint8", "float32"]))
    seed = draw(seeds)
    expr = pixels((n, c, h, w), seed) if dt == "uint8" else uniform01((n, c, h, w), seed)
    if draw(st.booleans()):  # flat backgrounds, as glyphs have
        expr = (f"np.where({uniform01((n, c, h, w), seed + 1)} < 0.8, "
                f"np.{dt}({255 if dt == 'uint8' else 1}), {expr})")
    draft = Draft()
    draft.arr("images", expr, (n, c, h, w), dt)
    draft.arr("out", zeros((n, c, h, w), dt), (n, c, h, w), dt)
    name = draw(st.sampled_from(CORRUPTIONS))
    draft.val("name", repr(name), value=name)
    sev = draw(st.integers(1, 5))
    draft.val("severity", num(sev), value=sev)
    draft.val("seed", num(draw(u64 | seeds)))
    draft.val("index", num(draw(u64 | st.integers(0, 10))))
    draft.val("ink", repr(draw(st.sampled_from(INKS))))
    return draft


def _corrupt_breaks(draft):
    out = []
    x, f = draft.args["images"], draft.facts["images"]
    if f["dtype"] == "float32":
        for v in (1.5, -0.25):
            out.append(Break("images", f"with_value({x}, {v}, 0)", "float outside [0, 1]",
                             ("images",)))
    shp = f["shape"]
    out.append(Break("out", zeros([shp[0] + 1, *shp[1:]], f["dtype"]), "shape unlike images",
                     ("out", "images")))
    other = "float32" if f["dtype"] == "uint8" else "uint8"
    out.append(Break("out", zeros(shp, other), "dtype unlike images", ("out", "images")))
    return out


def check_info(result, args, meta):
    assert isinstance(result, list) and len(result) == len(CORRUPTIONS), \
        f"{len(result)} rows for {len(CORRUPTIONS)} corruptions"
    for row, name in zip(result, CORRUPTIONS):
        assert set(row) == {"name", "family", "parameter", "values", "description"}, row
        assert row["name"] == name, f"row {row['name']!r} where {name!r} is listed"
        v = row["values"]
        assert len(v) == 5 and all(isinstance(x, float) and np.isfinite(x) for x in v), row


def check_threads(result, args, meta):
    assert isinstance(result, int) and not isinstance(result, bool) and result >= 1, result


class NoArgs(Spec):
    """The positional arguments of ``function``, which takes none (valid: none); a
    rejection names the function."""

    def __init__(self, function: str) -> None:
        self.function = function

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        return [Break(name, "(0,)", "one argument", (self.function,)),
                Break(name, "(None, None)", "two arguments", (self.function,))]

    def junk(self, name: str) -> list[Break]:
        return [Break(b.arg, f"({b.expr},)", b.how, (self.function,))
                for b in super().junk(name)]


def _no_args_target(name, check):
    fn = name.split(".")[1]
    draft = Draft()
    draft.val("args", "()")
    return Target(name=name, call=f"_core.{fn}(*args)", params={"args": NoArgs(fn)},
                  valid=st.just(draft), check=check)


TARGETS = [
    Target(
        name="core.render_glyphs",
        call="_core.render_glyphs(seed, classes, per_class, image_size)",
        params={"seed": Int(0, 2**64 - 1, huge="skip"),
                "classes": Arr(("int64",), (1,), empty="tolerated"),
                "per_class": Int(1, related=("classes", "image_size")),
                "image_size": Int(_core.GLYPH_MIN_SIZE, _core.GLYPH_MAX_SIZE)},
        valid=valid_glyphs(),
        check=check_glyphs,
        relational=_glyph_breaks,
    ),
    Target(
        name="core.corrupt_into",
        call="_core.corrupt_into(images, out, name, severity, seed, index, ink)",
        params={"images": Arr(("uint8", "float32"), (4,), linked=("out",), related=("out",)),
                "out": Arr(("uint8", "float32"), (4,), role="out", finite=False,
                           linked=("images",), related=("images",), alias_of=("images",)),
                "name": Choice(CORRUPTIONS),
                "severity": Int(1, 5),
                "seed": Int(0, 2**64 - 1, huge="skip"),
                "index": Int(0, 2**64 - 1, huge="skip"),
                "ink": Choice(INKS)},
        valid=valid_corrupt(),
        check=check_corrupt,
        relational=_corrupt_breaks,
        outputs=("out",),
    ),
    _no_args_target("core.corruption_info", check_info),
    _no_args_target("core.num_threads", check_threads),
]
