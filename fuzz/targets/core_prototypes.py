"""Targets: ``_core.prototypes`` (mean, median, trimmed mean, geometric median) and
``_core.mean_prototypes_backward``, against per-class NumPy references."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import strategies as st

from ..case import Draft, Target
from ..spec import Arr, Choice, Float, Int
from ..values import ints, normal, num
from ._common import arr_type, class_labels, close, dims, label_breaks, seeds, small

FLOATS = ("float32", "float64")
METHODS = ("mean", "median", "trimmed_mean", "geometric_median")


def robust_reference(rows, method, trim):
    """The prototype of one class's rows ``(n, D)`` (float64)."""
    n = rows.shape[0]
    if method == "mean":
        return rows.mean(0)
    if method == "median":
        return np.median(rows, 0)
    cut = int(np.floor(trim * n))
    return np.sort(rows, 0)[cut:n - cut].mean(0)


def weiszfeld(rows, steps=3000):
    """A close approximation of the geometric median of ``rows`` (reference only)."""
    m = rows.mean(0)
    for _ in range(steps):
        d = np.maximum(np.sqrt(((rows - m) ** 2).sum(1)), 1e-300)
        w = 1.0 / d
        m = (w[:, None] * rows).sum(0) / w.sum()
    return m


def check_geometric_median(what, got, rows, tol, max_iter, scale):
    """Weiszfeld from the mean never raises the objective (sum of distances); converged
    runs reach the optimum (within 0.1%)."""

    def objective(m):
        return float(np.sqrt(((rows - m) ** 2).sum(1)).sum())

    assert np.isfinite(got).all(), f"{what}: not finite: {got}"
    slack = 1e-5 * scale * (1 + len(rows))
    assert objective(got) <= objective(rows.mean(0)) + slack, \
        f"{what}: objective {objective(got)} above the mean's {objective(rows.mean(0))}"
    if max_iter >= 100 and tol <= 1e-6:
        best = min([objective(r) for r in rows] + [objective(weiszfeld(rows))])
        assert objective(got) <= best * (1 + 1e-3) + slack, \
            f"{what}: objective {objective(got)}, the geometric median's is {best}"


def check_prototypes(result, args, meta):
    emb, lab = np.asarray(args["emb"]), np.asarray(args["labels"])
    ways, method = int(args["ways"]), str(args["method"])
    b, _, d = emb.shape
    arr_type("prototypes", result, emb.dtype, (b, ways, d))
    x = emb.astype(np.float64)
    eps = 2e-6 if emb.dtype == np.float32 else 1e-12
    for t in range(b):
        for k in range(ways):
            rows = x[t][lab[t] == k]
            got = result[t, k].astype(np.float64)
            scale = 1 + np.abs(rows).max(initial=0)
            what = f"prototypes[{t}, {k}] ({method})"
            if method == "geometric_median":
                check_geometric_median(what, got, rows, float(args["tol"]),
                                       int(args["max_iter"]), scale)
            else:
                close(what, got, robust_reference(rows, method, float(args["trim"])), eps,
                      eps * scale)


def _emb(draw, b, s, d, dt, seed):
    expr = normal((b, s, d), seed, dt)
    return f"np.round({expr})" if draw(st.booleans()) else expr  # ties for the medians


@st.composite
def valid_prototypes(draw):
    b, ways = draw(small), draw(small)
    labels = draw(class_labels(b, ways))
    s, d, dt = len(labels[0]), draw(dims), draw(st.sampled_from(FLOATS))
    draft = Draft()
    draft.arr("emb", _emb(draw, b, s, d, dt, draw(seeds)), (b, s, d), dt)
    draft.arr("labels", ints(labels), (b, s), "int64")
    draft.facts["labels"]["values"] = labels
    draft.val("ways", num(ways), value=ways)
    method = draw(st.sampled_from(METHODS))
    draft.val("method", repr(method), value=method)
    trim = draw(st.sampled_from([0.0, 0.2, 0.25, 0.49]) | st.floats(0.0, 0.4999))
    draft.val("trim", num(trim), value=trim)
    tol = draw(st.sampled_from([1e-6, 1e-9, 1e-3]))
    draft.val("tol", num(tol), value=tol)
    max_iter = draw(st.sampled_from([100, 1000]) | st.integers(1, 300))
    draft.val("max_iter", num(max_iter), value=max_iter)
    return draft


def check_mean_backward(result, args, meta):
    g, lab = np.asarray(args["grad_output"]), np.asarray(args["labels"])
    b, ways, d = g.shape
    s = int(args["support"])
    arr_type("grad_emb", result, g.dtype, (b, s, d))
    want = np.zeros((b, s, d))
    for t in range(b):
        counts = np.bincount(lab[t], minlength=ways)
        want[t] = g[t][lab[t]].astype(np.float64) / counts[lab[t]][:, None]
    eps = 2e-6 if g.dtype == np.float32 else 1e-12
    close("grad_emb", result, want, eps, eps * (1 + np.abs(want).max(initial=0)))


@st.composite
def valid_mean_backward(draw):
    b, ways = draw(small), draw(small)
    labels = draw(class_labels(b, ways))
    s, d, dt = len(labels[0]), draw(dims), draw(st.sampled_from(FLOATS))
    draft = Draft()
    draft.arr("grad_output", normal((b, ways, d), draw(seeds), dt), (b, ways, d), dt)
    draft.arr("labels", ints(labels), (b, s), "int64")
    draft.facts["labels"]["values"] = labels
    draft.val("support", num(s), value=s)
    draft.facts["ways"] = {"value": ways}
    return draft


def _backward_breaks(draft):
    """Label breaks of the forward; a class without items only has no gradient to get."""
    out = []
    for b in label_breaks(draft, data="grad_output"):
        if b.arg != "ways":
            out.append(replace(b, tolerated=True) if b.how == "class 0 missing" else b)
    return out


TARGETS = [
    Target(
        name="core.prototypes",
        call="_core.prototypes(emb, labels, ways, method, trim, tol, max_iter)",
        params={
            "emb": Arr(FLOATS, (3,), related=("labels",),
                       empty=("broken", "broken", "tolerated")),
            "labels": Arr(("int64",), (2,), related=("emb",), empty="broken"),
            "ways": Int(1, related=("labels",)),
            "method": Choice(METHODS),
            "trim": Float(0.0, 0.5, hi_open=True),
            "tol": Float(0.0, lo_open=True),
            "max_iter": Int(1, huge="skip"),
        },
        valid=valid_prototypes(),
        check=check_prototypes,
        relational=label_breaks,
    ),
    Target(
        name="core.mean_prototypes_backward",
        call="_core.mean_prototypes_backward(grad_output, labels, support)",
        params={
            "grad_output": Arr(FLOATS, (3,), related=("labels",),
                               empty=("broken", "broken", "tolerated")),
            "labels": Arr(("int64",), (2,), related=("grad_output", "support"),
                          empty="broken"),
            "support": Int(1, related=("labels",)),
        },
        valid=valid_mean_backward(),
        check=check_mean_backward,
        relational=_backward_breaks,
    ),
]
