"""Targets: ``mr.robust.check_grid``, ``suite_grid``,
``metarobust.corruption_info.check_corruption_args`` and ``mr.seeds.derive``: results
against the documented grid normalisation, the documented domain-shift targets and NumPy's
SeedSequence."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import metarobust as mr

from ..case import Break, Draft, Target
from ..spec import Choice, Int, Obj, Spec
from ..values import num
from ._common import u64
from .core_images import CORRUPTIONS, INKS
from .robust import Unchecked

FAMILIES = ("clean", "label_noise_symmetric", "label_noise_paired", "label_noise_outlier",
            "gaussian_noise", "fgsm", "pgd", "pgd_support", "certified_l2")


@st.composite
def valid_grid(draw):
    grid = {}
    for fam in draw(st.lists(st.sampled_from(FAMILIES + ("corruption:", "domain_shift:")),
                             min_size=1, max_size=4, unique=True)):
        if fam == "corruption:":
            fam += draw(st.sampled_from(CORRUPTIONS))
            grid[fam] = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
        elif fam == "domain_shift:":
            grid[fam + draw(st.sampled_from(("glyphs", "omniglot", "fashion_mnist")))] = \
                draw(st.sampled_from([[0], [], None]))
        elif fam == "clean":
            grid[fam] = draw(st.sampled_from([[0], [0.0], [], None]))
        elif fam.startswith("label_noise"):
            grid[fam] = draw(st.lists(st.floats(0, 1), min_size=1, max_size=4))
        else:
            grid[fam] = draw(st.lists(st.floats(0, 1) | st.integers(0, 3), min_size=1,
                                      max_size=4))
    draft = Draft(meta={"grid": grid})
    draft.val("grid", repr(grid))
    return draft


def check_grid(result, args, meta):
    grid = meta["grid"]
    assert isinstance(result, dict) and list(result) == list(grid), f"families {list(result)}"
    for fam, values in grid.items():
        if fam == "clean" or fam.startswith("domain_shift:"):
            want = [0.0]
        else:
            want = sorted({float(v) for v in values})
        assert result[fam] == want and all(type(v) is float for v in result[fam]), \
            f"{fam}: {result[fam]}, expected {want}"


def grid_breaks(draft):
    g = draft.meta["grid"]
    fam = next(iter(g))
    return [Break("grid", repr({**g, "bogus": [0.1]}), "an unknown family", ("grid",)),
            Break("grid", repr({**g, "corruption:nope": [1]}), "an unknown corruption",
                  ("grid",)),
            Break("grid", repr({**g, "corruption:thin": [2.5]}), "a fractional severity",
                  ("grid",)),
            Break("grid", repr({**g, "corruption:thin": [6]}), "severity 6", ("grid",)),
            Break("grid", repr({**g, "label_noise_paired": [1.5]}), "rate 1.5", ("grid",)),
            Break("grid", repr({**g, "fgsm": [-0.1]}), "a negative eps", ("grid",)),
            Break("grid", "{" + repr(fam) + ": [float('nan')]}", "a NaN strength", ("grid",)),
            Break("grid", repr({**g, "gaussian_noise": "0.1"}), "a str of strengths",
                  ("grid",)),
            Break("grid", repr({**g, "pgd": []}), "no strengths", ("grid",)),
            Break("grid", repr({**g, "clean": [0.2]}), "a strength for clean", ("grid",)),
            Break("grid", "{}", "an empty grid", ("grid",)),
            Break("grid", repr({**g, 3: [0]}), "a non-str family", ("grid",)),
            Break("grid", repr({**g, "fgsm": [True]}), "a bool strength", ("grid",))]


def check_suite_grid(result, args, meta):
    assert result == mr.robust.check_grid(result), "not a checked grid"
    assert "clean" in result
    shift = [f[len("domain_shift:"):] for f in result if f.startswith("domain_shift:")]
    assert shift == meta["targets"], f"domain-shift targets {shift}, expected {meta['targets']}"


@st.composite
def valid_suite_grid(draw):
    suite = draw(st.sampled_from(("quick", "default", "full")))
    dataset = draw(st.sampled_from(("glyphs", "omniglot", "idx", "folder")))
    targets = {"glyphs": ["omniglot"],
               "omniglot": ["glyphs", "fashion_mnist"] + ([] if suite == "quick" else
                                                          ["fashion_mnist_inverted"])
               }.get(dataset, ["glyphs", "omniglot"])
    draft = Draft(meta={"targets": targets})
    draft.val("suite", repr(suite), value=suite)
    draft.val("dataset", repr(dataset), value=dataset)
    return draft


@st.composite
def valid_check_args(draw):
    draft = Draft()
    name = draw(st.none() | st.sampled_from(CORRUPTIONS))
    draft.val("name", repr(name), value=name)
    draft.val("severity", num(draw(st.integers(1, 5))))
    draft.val("ink", repr(draw(st.sampled_from(INKS))))
    arg = draw(st.sampled_from(["corruption", "name", "names"]))
    draft.val("arg", repr(arg), value=arg)
    draft.val("corrupt", repr(draw(st.sampled_from(("query", "support", "both")))))
    return draft


def check_args_result(result, args, meta):
    want = (args["name"], int(args["severity"]), args["ink"], args["corrupt"])
    assert result == want and type(result[1]) is int, f"{result!r}, expected {want!r}"


def check_args_breaks(draft):
    arg = draft.facts["arg"]["value"]
    return [Break("name", e, h, ("name", arg)) for e, h in (
        ("'bogus'", "unknown"), ("''", "empty str"), ("'THIN'", "wrong case"),
        ("0", "int for str"), ("b'thin'", "bytes for str"), ("['thin']", "list for str"),
        ("object()", "junk object"), ("3.5", "junk float"), ("np.array(['thin'])", "junk array"))]


class CheckedName(Spec):
    """``check_corruption_args``' name: its errors name ``arg``'s value (covered by the
    relational breaks), so junk only."""

    nullable = True

    def junk(self, name):
        return []


def check_derive(result, args, meta):
    parts = [int(args["seed"]), int(args["stream"]), *(int(p) for p in args["parts"])]
    want = int(np.random.SeedSequence(parts).generate_state(1, np.uint64)[0])
    assert isinstance(result, int) and result == want, f"{result!r}, expected {want}"


@st.composite
def valid_derive(draw):
    draft = Draft()
    draft.val("seed", num(draw(u64 | st.integers(0, 9))))
    tags = [mr.seeds.VALIDATION, mr.seeds.AUGMENT, mr.seeds.PGD_START]
    draft.val("stream", num(draw(st.sampled_from(tags) | st.integers(0, 2**16))))
    parts = draw(st.lists(st.integers(0, 2**40) | st.integers(0, 9), max_size=3))
    draft.val("parts", repr(tuple(parts)))
    return draft


class Parts(Spec):
    """``derive``'s positions: non-negative ints."""

    junk_skip = frozenset({"list", "set", "range", "generator", "str", "dict", "bytes",
                           "bytearray", "memoryview", "tensor", "str_array", "object_array",
                           "huge"})

    def breaks(self, draft, name):
        return [Break(name, e, h, (name,)) for e, h in (
            ("(-1,)", "a negative part"), ("(1.5,)", "a float part"), ("('3',)", "a str part"),
            ("(True,)", "a bool part"), ("(None,)", "None"))]

    def junk(self, name):
        return [Break(b.arg, f"({b.expr},)", b.how, (name,)) for b in super().junk(name)]


TARGETS = [
    Target(name="robust.check_grid", call="mr.robust.check_grid(grid)",
           params={"grid": Obj()}, valid=valid_grid(), check=check_grid,
           relational=grid_breaks),
    Target(name="robust.suite_grid", call="mr.robust.suite_grid(suite, dataset)",
           params={"suite": Choice(("quick", "default", "full")),
                   "dataset": Choice(("glyphs", "omniglot", "idx", "folder"))},
           valid=valid_suite_grid(), check=check_suite_grid),
    Target(name="corruption_info.check_corruption_args",
           call="mr.corruption_info.check_corruption_args(name, severity, ink, arg, corrupt)",
           params={"name": CheckedName(), "severity": Int(1, 5), "ink": Choice(INKS),
                   "arg": Unchecked(), "corrupt": Choice(("query", "support", "both"))},
           valid=valid_check_args(), check=check_args_result, relational=check_args_breaks),
    Target(name="seeds.derive", call="mr.seeds.derive(seed, stream, *parts)",
           params={"seed": Int(0, 2**64 - 1, huge="skip"), "stream": Int(0, huge="skip"),
                   "parts": Parts()},
           valid=valid_derive(), check=check_derive),
]
