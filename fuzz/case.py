"""The case model: a target (a callable entry point with its argument specs, a strategy of
valid calls and a reference check), a draft (one valid call as Python source) and a break
(one argument made bad). A case is a JSON-able dict built from a draft and at most one
break; workers run it and reproducers print it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("valid", "broken", "junk")


@dataclass
class Draft:
    """One valid call under construction: statements run first (``setup``), the argument
    expressions in call order (each bound to a variable of the argument's name), what the
    breakers need to know of each array argument (``facts[name] = {"shape", "dtype"}``) and
    the data a check needs (``meta``, JSON-able)."""

    args: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def arr(self, name: str, expr: str, shape: tuple[int, ...] | list[int], dtype: str) -> None:
        """Adds an array argument with its shape and dtype."""
        self.args[name] = expr
        self.facts[name] = {"shape": [int(d) for d in shape], "dtype": dtype}

    def val(self, name: str, expr: str, **facts: Any) -> None:
        """Adds a non-array argument (its facts, e.g. the value, for the breakers)."""
        self.args[name] = expr
        self.facts[name] = dict(facts)


@dataclass(frozen=True)
class Break:
    """Argument ``arg`` made bad: its new expression, a short label of what was done
    (``how``, e.g. "dtype int64" or "huge 2**31"), the names a rejection may give for it
    (``=value`` stands for the argument's value as text and ``*name`` for a file name, both
    matched anywhere in the message),
    whether a correct result is acceptable too (``tolerated``: e.g. a misaligned input that
    an implementation may copy) and statements to run before the arguments."""

    arg: str
    expr: str
    how: str
    names: tuple[str, ...]
    tolerated: bool = False
    setup: tuple[str, ...] = ()


@dataclass
class Target:
    """A fuzzed entry point.

    name: "group.function" (e.g. "core.prototypes"); call: the call as an expression over
    the argument names (and setup variables); params: argument name -> Spec (see
    :mod:`fuzz.spec`); valid: hypothesis strategy of Drafts; check(result, env, meta):
    raises AssertionError when a valid call's result is wrong (None: any return passes);
    relational(draft): extra Breaks that need the whole draft (shapes that disagree,
    labels out of range); outputs: arguments the call writes (not checked for being left
    unchanged); rejects: exception type names that also count as a rejection (e.g.
    FileNotFoundError for a path).
    """

    name: str
    call: str
    params: dict[str, Any]
    valid: Any
    check: Callable[..., None] | None = None
    relational: Callable[[Draft], list[Break]] | None = None
    outputs: tuple[str, ...] = ()
    rejects: tuple[str, ...] = ()


def make_case(target: Target, kind: str, draft: Draft, brk: Break | None = None) -> dict:
    """The JSON-able case of ``draft`` with ``brk`` applied."""
    args = dict(draft.args)
    setup = list(draft.setup)
    if brk is not None:
        if brk.arg not in args:
            raise KeyError(f"{target.name}: break of unknown argument {brk.arg!r}")
        args[brk.arg] = brk.expr
        setup += list(brk.setup)
    return {
        "target": target.name,
        "kind": kind,
        "arg": brk.arg if brk else None,
        "how": brk.how if brk else "",
        "names": list(brk.names) if brk else [],
        "tolerated": bool(brk.tolerated) if brk else False,
        "setup": setup,
        "args": [[k, v] for k, v in args.items()],
        "meta": draft.meta,
    }
