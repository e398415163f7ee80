"""Argument specs: what each kind of argument accepts, and from that the ways to break it
(each a :class:`~fuzz.case.Break`) and the valid variants of a valid value (read-only
inputs, numpy integers, non-contiguous tensors...). A break must be bad under the contract
of docs/design.md; where an implementation may also accept it correctly (a misaligned input
it copies), the break is marked tolerated."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .case import Break, Draft
from .values import num

# Junk: arbitrary objects, tagged so a spec can leave out the ones it may accept.
JUNK = (
    ("object", "object()"), ("list", "[]"), ("dict", "{}"), ("str", "'junk'"),
    ("bytes", "b'\\x00'"), ("complex", "1j"), ("lambda", "(lambda: 0)"),
    ("ellipsis", "..."), ("type", "int"), ("str_array", "np.array(['a', 'b'])"),
    ("object_array", "np.array([None, 1], dtype=object)"), ("nan", "float('nan')"),
    ("none", "None"), ("tensor", "torch.zeros(2)"), ("set", "set()"), ("range", "range(3)"),
    ("exception", "ValueError('x')"), ("module", "np"), ("huge", "2**200"),
    ("negative", "-7"), ("float", "0.5"), ("true", "True"), ("np_float", "np.float64(1.5)"),
    ("generator", "(i for i in range(3))"), ("memoryview", "memoryview(b'abcd')"),
    ("nested", "[[1, 2], [3]]"), ("bytearray", "bytearray(8)"),
)

HUGE = (2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100)
OTHER_DTYPES = ("float32", "float64", "float16", "int64", "int32", "uint8", "bool", "complex64")
TORCH_DTYPES = ("float32", "float64", "int64", "int32", "bool", "complex64")


class Spec:
    """Base: no breaks of its own, every junk object is bad."""

    nullable = False
    junk_skip: frozenset[str] = frozenset()

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        return []

    def variants(self, draft: Draft, name: str) -> list[tuple[str, str]]:
        """Valid alternatives ``(expression, label)`` to the draft's value."""
        return []

    def junk(self, name: str) -> list[Break]:
        skip = set(self.junk_skip) | ({"none"} if self.nullable else set())
        return [Break(name, expr, f"junk {tag}", (name,)) for tag, expr in JUNK
                if tag not in skip]


def _b(name: str, expr: str, how: str, names: tuple[str, ...] = (),
       tolerated: bool = False) -> Break:
    return Break(name, expr, how, (name, *names), tolerated)


@dataclass
class Int(Spec):
    """An int in ``[lo, hi]`` (hi None: no bound). huge: what ints beyond 2**31 are when
    under ``hi``: "broken" (too large for what they size), "tolerated" (a correct result
    or a rejection) or "skip" (not tried); related: arguments a rejection of a size may
    name instead."""

    lo: int = 0
    hi: int | None = None
    huge: str = "broken"
    related: tuple[str, ...] = ()
    nullable: bool = False
    junk_skip: frozenset[str] = frozenset({"true"})  # bools are a break of their own

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        v = draft.facts.get(name, {}).get("value")
        v = self.lo if v is None else v
        out = [_b(name, num(self.lo - 1), f"below {num(self.lo)}", self.related)]
        if self.lo >= 0:
            out.append(_b(name, "-1", "negative", self.related))
            out.append(_b(name, "-(2**63)", "negative huge", self.related))
        if self.hi is not None:
            out.append(_b(name, num(self.hi + 1), "above max", self.related))
        for h in HUGE:
            over = self.hi is not None and h > self.hi
            if over or (self.huge in ("broken", "tolerated") and (self.hi is None or h <= self.hi)):
                out.append(_b(name, num(h), f"huge {num(h)}", self.related,
                              tolerated=self.huge == "tolerated" and not over))
        out += [
            _b(name, "True", "bool"), _b(name, "False", "bool"),
            _b(name, "np.bool_(True)", "numpy bool"),
            _b(name, f"{float(v)!r}", "float for int"),
            _b(name, f"{v + 0.5!r}", "fractional float"),
            _b(name, repr(str(v)), "str for int"),
            _b(name, "float('nan')", "nan for int"),
        ]
        if not self.nullable:
            out.append(_b(name, "None", "None"))
        return out

    def junk(self, name: str) -> list[Break]:
        skip = set()
        if self.hi is None and self.huge != "broken":
            skip.add("junk huge")  # no bound: 2**200 may be right
        return [b for b in super().junk(name) if b.how not in skip]

    def variants(self, draft: Draft, name: str) -> list[tuple[str, str]]:
        v = draft.facts.get(name, {}).get("value")
        if not isinstance(v, int):
            return []
        out = []
        if -(2**63) <= v < 2**63:
            out.append((f"np.int64({num(v)})", "numpy int64"))
        if 0 <= v < 2**64:
            out.append((f"np.uint64({num(v)})", "numpy uint64"))
        return out


@dataclass
class Float(Spec):
    """A float in ``[lo, hi]`` (``lo_open``/``hi_open``: bounds excluded)."""

    lo: float = float("-inf")
    hi: float = float("inf")
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False
    junk_skip: frozenset[str] = frozenset({"float", "np_float", "huge", "negative", "true"})

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        # every float argument of this API must be finite
        out = [_b(name, "float('nan')", "nan"), _b(name, "float('inf')", "inf"),
               _b(name, "float('-inf')", "-inf")]
        if self.lo != float("-inf"):
            out.append(_b(name, num(self.lo if self.lo_open else self.lo - 1.0), "below min"))
        if self.hi != float("inf"):
            out.append(_b(name, num(self.hi if self.hi_open else self.hi + 1.0), "above max"))
        out += [_b(name, "'0.1'", "str for float"), _b(name, "True", "bool for float")]
        if not self.nullable:
            out.append(_b(name, "None", "None"))
        return out

    def variants(self, draft: Draft, name: str) -> list[tuple[str, str]]:
        v = draft.facts.get(name, {}).get("value")
        if not isinstance(v, float):
            return []
        out = [(f"np.float64({num(v)})", "numpy float64")]
        if v == int(v) and abs(v) < 2**31:
            out.append((repr(int(v)), "int for float"))
        return out


@dataclass
class Choice(Spec):
    """One of ``options`` (strings)."""

    options: tuple[str, ...] = ()
    nullable: bool = False

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        o = self.options[0]
        out = [_b(name, "'bogus'", "unknown"), _b(name, "''", "empty str"),
               _b(name, repr(o.upper()), "wrong case"), _b(name, repr(o + " "), "trailing space"),
               _b(name, "0", "int for str"), _b(name, repr(o.encode()), "bytes for str"),
               _b(name, repr([o]), "list for str")]
        if not self.nullable:
            out.append(_b(name, "None", "None"))
        return [b for b in out if b.expr.strip("'") not in self.options]

    def variants(self, draft: Draft, name: str) -> list[tuple[str, str]]:
        v = draft.facts.get(name, {}).get("value")
        return [(f"np.str_({v!r})", "numpy str")] if isinstance(v, str) else []


@dataclass
class Bool(Spec):
    """A bool; ``strict``: other truthy values are refused (else anything goes)."""

    strict: bool = True
    junk_skip: frozenset[str] = frozenset({"true"})

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        if not self.strict:
            return []
        return [_b(name, e, h) for e, h in (("1", "int for bool"), ("0", "int for bool"),
                                             ("'True'", "str for bool"), ("None", "None"),
                                             ("1.0", "float for bool"))]

    def junk(self, name: str) -> list[Break]:
        return super().junk(name) if self.strict else []


@dataclass
class Text(Spec):
    """Any str (a name, a label): only non-strings are junk."""

    junk_skip: frozenset[str] = frozenset({"str"})


@dataclass
class Path(Spec):
    """A filesystem path; a missing one may raise FileNotFoundError naming it."""

    junk_skip: frozenset[str] = frozenset({"str"})

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        return [_b(name, "os.path.join(tmp, 'missing')", "missing path", ("=value",)),
                _b(name, "os.path.join(tmp, 'missing', 'deeper')", "missing path",
                   ("=value",))]


@dataclass
class Obj(Spec):
    """Any other object (a learner, a batch, a dataset): breaks come from the target."""

    nullable: bool = False
    junk_skip: frozenset[str] = frozenset()


@dataclass
class Arr(Spec):
    """A numpy array (or torch tensor with ``lib="torch"``).

    dtypes/ndims: accepted; role: "in" or "out" (written by the call); finite: NaN/inf are
    bad; contiguous: "required" (a strided view is bad) or "copied" (fine); linked: arguments
    that must share this dtype; related: arguments whose shapes tie to this one's; empty:
    what a zero-length axis is ("tolerated": a correct empty result or a rejection,
    "broken" or "valid"), one value or a tuple for the trailing axes; aligned: what a
    misaligned copy is; lists: what a nested list is; alias_of: inputs an output must not
    share memory with.
    """

    dtypes: tuple[str, ...] = ("float32",)
    ndims: tuple[int, ...] = (1,)
    role: str = "in"
    lib: str = "numpy"
    finite: bool = True
    contiguous: str = "required"
    linked: tuple[str, ...] = ()
    related: tuple[str, ...] = ()
    empty: str | tuple[str, ...] = "tolerated"
    aligned: str = ""
    lists: str = "broken"
    alias_of: tuple[str, ...] = ()
    nullable: bool = False

    def breaks(self, draft: Draft, name: str) -> list[Break]:
        f = draft.facts.get(name, {})
        if "shape" not in f:  # None given for an optional array
            return []
        shp, dt, x = f["shape"], f["dtype"], draft.args[name]
        size = 1
        for d in shp:
            size *= d
        out = self._dtype_breaks(name, x, dt) + self._ndim_breaks(name, x, shp)
        tensor = self.lib == "torch"
        out += self._layout_breaks(name, x, shp, dt, size) if not tensor else []
        if self.finite and dt.startswith(("float", "complex")) and size:
            for v in ("float('nan')", "float('inf')", "float('-inf')"):
                out.append(_b(name, f"with_value({x}, {v}, {size - 1})", f"non-finite {v}"))
        for axis, d in enumerate(shp):
            # a tuple lists the modes of the trailing axes (so it fits either rank)
            back = axis - len(shp)
            mode = self.empty if isinstance(self.empty, str) else \
                (self.empty[back] if -back <= len(self.empty) else "broken")
            if d > 0 and mode != "valid":
                out.append(_b(name, f"({x})[{':, ' * axis}:0]", f"empty axis {axis}",
                              self.related, tolerated=mode == "tolerated"))
        if tensor:
            out.append(_b(name, f"({x}).numpy()", "numpy for tensor"))
            out.append(_b(name, f"({x}).tolist()", "list for tensor"))
        else:
            out.append(_b(name, f"({x}).tolist()", "list for array",
                          tolerated=self.lists == "tolerated"))
            out.append(_b(name, f"torch.from_numpy(np.array({x}))", "tensor for array",
                          tolerated=self.lists == "tolerated"))  # the same np.asarray
        return out

    def _dtype_breaks(self, name: str, x: str, dt: str) -> list[Break]:
        out = []
        for other in TORCH_DTYPES if self.lib == "torch" else OTHER_DTYPES:
            if other == dt:
                continue
            if self.lib == "torch":
                expr = f"({x}).to(torch.{other})"
            else:
                expr = f"np.asarray({x}).astype(np.{other})"
            if other not in self.dtypes:
                out.append(_b(name, expr, f"dtype {other}"))
            elif self.linked:
                out.append(_b(name, expr, f"dtype {other} unlike linked", self.linked))
        return out

    def _ndim_breaks(self, name: str, x: str, shp: list[int]) -> list[Break]:
        nd = len(shp)
        cands = [(f"({x})[None]", nd + 1)]
        if nd >= 2:
            cands.append((f"({x}).reshape(-1)", 1))
        if nd >= 1 and shp[0] >= 1:
            cands.append((f"({x})[0]", nd - 1))
        out = []
        for expr, n in cands:
            if n in self.ndims:
                # another accepted rank: the arguments' ranks now disagree, which a caller
                # may resolve (a single task as a batch of one) if the result is right
                out.append(_b(name, expr, f"ndim {n} unlike related", self.related,
                              tolerated=True))
            else:
                out.append(_b(name, expr, f"ndim {n}"))
        return out

    def _layout_breaks(self, name: str, x: str, shp: list[int], dt: str,
                       size: int) -> list[Break]:
        out = []
        if self.contiguous == "required":
            if size >= 2 and any(d > 1 for d in shp):
                out.append(_b(name, f"strided({x})", "non-contiguous"))
            if size >= 2 and sum(d > 1 for d in shp) >= 2:
                out.append(_b(name, f"np.asfortranarray({x})", "fortran order"))
        itemsize = int(re.sub(r"\D", "", dt) or 8) // 8 if dt != "bool" else 1
        if itemsize > 1 and size >= 1:
            aligned = self.aligned or ("broken" if self.role == "out" else "tolerated")
            out.append(_b(name, f"misaligned({x})", "misaligned",
                          tolerated=aligned == "tolerated"))
        if self.role == "out":
            out.append(_b(name, f"readonly({x})", "read-only out"))
        for other in self.alias_of:
            out.append(_b(name, f"{other}.view()", f"aliases {other}", (other,)))
        return out

    def junk(self, name: str) -> list[Break]:
        skip = {"tensor"} if self.lib == "torch" else set()
        return [b for b in super().junk(name) if b.how[len("junk "):] not in skip]

    def variants(self, draft: Draft, name: str) -> list[tuple[str, str]]:
        f = draft.facts.get(name, {})
        if "shape" not in f:
            return []
        x, shp = draft.args[name], f["shape"]
        if self.lib == "torch":
            out = [(f"t_strided({x})", "non-contiguous tensor")] if shp and shp[-1] > 1 else []
            if f["dtype"].startswith("float"):
                out.append((f"({x}).requires_grad_(True)", "requires grad"))
            return out
        if self.role == "in":
            out = [(f"readonly({x})", "read-only input")]
            if self.contiguous == "copied" and len(shp) and shp[-1] > 1:
                out.append((f"strided({x})", "non-contiguous input"))
            return out
        return []
