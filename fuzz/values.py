"""Python source for argument values: every case is built from expressions, so the worker
and a reproducer run exactly the same code. This module writes those expressions and holds
the few helpers they use (copied verbatim into reproducers)."""

from __future__ import annotations

import math

# Helpers available to case expressions; a reproducer starts with this text.
HELPERS = '''
def strided(a):
    """The values of `a` as a non-contiguous view (every other element of a doubled axis)."""
    return np.stack([a, a], axis=-1)[..., 0]


def misaligned(a):
    """A copy of `a` starting at byte 1 of a uint8 buffer: C-contiguous but not aligned."""
    buf = np.zeros(a.nbytes + 1, np.uint8)[1:]
    out = buf.view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def readonly(a):
    """A read-only copy of `a`."""
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def with_value(a, value, at=0):
    """A copy of `a` (numpy or torch) with flat element `at` set to `value`."""
    a = a.clone() if isinstance(a, torch.Tensor) else np.array(a, copy=True)
    a.reshape(-1)[at] = value
    return a


def class_means(x, labels, ways):
    """Per-class means ``(B, ways, D)`` of ``x (B, S, D)`` with ``labels (B, S)``."""
    x, labels = np.asarray(x), np.asarray(labels)
    out = np.zeros((x.shape[0], ways, x.shape[2]), dtype=x.dtype)
    for t in range(x.shape[0]):
        for k in range(ways):
            out[t, k] = x[t][labels[t] == k].mean(0)
    return out


def zero_row(a, i):
    """A copy of ``a (B, n, D)`` with row ``i`` of every task set to zero."""
    a = np.array(a, copy=True)
    a[:, i] = 0
    return a


def t_strided(t):
    """The values of tensor `t` as a non-contiguous tensor."""
    return torch.stack([t, t], dim=-1)[..., 0]
'''


def num(v: float | int) -> str:
    """A number as source: large powers of two (and their neighbours) written as ``2**k``,
    nan and inf as ``float(...)``."""
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, int):
        a = abs(v)
        for off, tail in ((0, ""), (1, " - 1"), (-1, " + 1")):
            p = a + off
            if a >= 2**20 and p & (p - 1) == 0:
                text = f"2**{p.bit_length() - 1}{tail}"
                return f"-({text})" if v < 0 else text
        return repr(v)
    if math.isnan(v):
        return "float('nan')"
    if math.isinf(v):
        return "float('inf')" if v > 0 else "float('-inf')"
    return repr(v)


def shape(s: tuple[int, ...] | list[int]) -> str:
    return repr(tuple(int(d) for d in s))


def normal(shp, seed: int, dtype: str = "float32", scale: float = 1.0) -> str:
    """Standard normal values (times `scale`)."""
    sc = "" if scale == 1.0 else f" * {scale!r}"
    return (f"(np.random.default_rng({seed}).standard_normal({shape(shp)}){sc})"
            f".astype('{dtype}')")


def uniform01(shp, seed: int, dtype: str = "float32") -> str:
    return f"np.random.default_rng({seed}).random({shape(shp)}).astype('{dtype}')"


def pixels(shp, seed: int) -> str:
    """Random uint8 images."""
    return f"np.random.default_rng({seed}).integers(0, 256, {shape(shp)}, dtype=np.uint8)"


def ints(values, dtype: str = "int64") -> str:
    """A literal integer array (nested lists)."""
    return f"np.array({values!r}, dtype=np.{dtype})"


def zeros(shp, dtype: str) -> str:
    return f"np.zeros({shape(shp)}, dtype=np.{dtype})"


def tensor(np_expr: str) -> str:
    return f"torch.from_numpy({np_expr})"


def empty_axis(expr: str, axis: int) -> str:
    """`expr` sliced to length 0 along `axis`."""
    return f"({expr})[{':, ' * axis}:0]"
