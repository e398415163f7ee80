"""Shared pieces of the target modules: strategies of sizes and seeds, and the comparison
the reference checks use (copied into reproducers with them)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

seeds = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
# Mostly tiny sizes (fast, edge-heavy), now and then large enough for the parallel paths.
small = st.integers(1, 4)
dims = st.one_of(st.integers(1, 8), st.integers(9, 160))


def close(what, got, want, rtol, atol):
    """Asserts ``got`` equals ``want`` within ``|got - want| <= atol + rtol * |want|``
    (same shape, NaN nowhere unless in both at the same place)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bad_nan = np.isnan(got) != np.isnan(want)
    assert not bad_nan.any(), (f"{what}: NaN at {np.argwhere(bad_nan)[0].tolist()} "
                               f"(got {got[bad_nan][:3]}, expected {want[bad_nan][:3]})")
    err = np.abs(np.nan_to_num(got - want))
    tol = atol + rtol * np.abs(np.nan_to_num(want))
    if err.size and (err > tol).any():
        i = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(f"{what}: differs at {list(map(int, i))}: got {got[i]!r}, "
                             f"expected {want[i]!r} (max error {err.max():.3g})")


def arr_type(what, value, dtype, shape):
    """Asserts ``value`` is a numpy array of ``dtype`` and ``shape``."""
    assert isinstance(value, np.ndarray), f"{what}: a {type(value).__name__}, not an array"
    assert value.dtype == np.dtype(dtype), f"{what}: dtype {value.dtype}, expected {dtype}"
    assert value.shape == tuple(shape), f"{what}: shape {value.shape}, expected {tuple(shape)}"


@st.composite
def class_labels(draw, tasks, ways, max_per_class=4):
    """Labels ``(tasks, S)`` (a list of lists) with every class 0..ways-1 present in each task,
    the same class counts in each task, shuffled."""
    counts = draw(st.lists(st.integers(1, max_per_class), min_size=ways, max_size=ways))
    base = [k for k in range(ways) for _ in range(counts[k])]
    return [list(draw(st.permutations(base))) for _ in range(tasks)]


def label_breaks(draft, labels="labels", ways="ways", data="emb"):
    """Relational breaks of integer class labels ``(B, S)`` against ``ways``: a value out
    of range, a class with no item, labels of another shape than the data's."""
    from ..case import Break
    from ..values import ints, num

    lab = draft.facts[labels]["values"]
    w = draft.facts[ways]["value"]
    x = draft.args[labels]
    flat = sum(len(r) for r in lab)
    out = [Break(labels, f"with_value({x}, {num(v)}, {flat - 1})", f"label {how}", (labels,))
           for v, how in ((w, "== ways"), (-1, "negative"), (2**40, "huge"))]
    if w >= 2:
        moved = [[1 if v == 0 else v for v in row] for row in lab]
        out.append(Break(labels, ints(moved), "class 0 missing", (labels, ways)))
    out.append(Break(ways, num(w + 1), "ways beyond the labels' classes", (ways, labels)))
    if len(lab[0]) >= 2:
        out.append(Break(labels, f"({x})[:, :-1]", "shorter than the data", (labels, data)))
    out.append(Break(labels, f"np.concatenate([{x}, {x}])", "more tasks than the data",
                     (labels, data)))
    return out
