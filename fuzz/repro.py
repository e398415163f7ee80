"""Standalone reproducers: a failing case as a Python script that needs only numpy, torch
and metarobust. It builds the same values from the same source the worker ran, makes the
call, and for a valid case runs the reference check (its source copied in)."""

from __future__ import annotations

import inspect
import textwrap
import types

from .case import Target
from .values import HELPERS

PREAMBLE = """import math
import os
import tempfile

import numpy as np
import torch

import metarobust as mr
from metarobust import _core
"""
BOUND = {"math", "os", "tempfile", "np", "torch", "mr", "_core"}  # names the preamble binds


def _names(code: types.CodeType) -> set[str]:
    out = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= _names(c)
    return out


def bundle(fn) -> str:
    """The source of ``fn`` and of the harness functions and constants it uses, in an order
    that defines each before the script calls ``fn``."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(f) -> None:
        if f.__name__ in seen:
            return
        seen.add(f.__name__)
        for name in sorted(_names(f.__code__)):
            g = f.__globals__.get(name)
            if isinstance(g, types.FunctionType) and g.__module__.startswith("fuzz"):
                visit(g)
            elif isinstance(g, types.ModuleType) and name not in seen | BOUND:
                seen.add(name)
                alias = "" if name == g.__name__ else f" as {name}"
                order.append(f"import {g.__name__}{alias}\n")
            elif (name not in seen and isinstance(g, (int, float, str, tuple))
                  and not isinstance(g, bool) and name.isupper()):
                seen.add(name)
                order.append(f"{name} = {g!r}\n")
        order.append(inspect.getsource(f))

    visit(fn)
    return "\n\n".join(textwrap.dedent(s).rstrip() + "\n" for s in order)


def _comment(text: str, width: int = 96) -> str:
    lines = []
    for raw in text.splitlines() or [""]:
        lines += textwrap.wrap(raw, width) or [""]
    return "\n".join(f"#   {ln}" for ln in lines[:40])


def expectation(case: dict) -> str:
    if case["kind"] == "valid":
        return "a result equal to the reference (the check below passes)"
    names = ", ".join(n for n in case["names"] if n != "=value") or case["arg"]
    also = "; or a correct result" if case["tolerated"] else ""
    return (f"ValueError/TypeError/OverflowError naming {names} in the first 60 characters "
            f"of its message{also}")


def reproducer(case: dict, result: dict, target: Target, case_id: int, seed: int) -> str:
    """The script of one failing case."""
    what = "valid input" if case["kind"] == "valid" else \
        f"{case['kind']}: argument {case['arg']!r} made bad ({case['how']})"
    head = [
        f"# Reproducer of fuzz case {case_id} of `python fuzz/run.py --seed {seed}`",
        f"# target: {target.name}    {what}",
        f"# outcome: {result['outcome']}",
        _comment(result.get("detail", "")),
        f"# expected: {expectation(case)}",
    ]
    body = [PREAMBLE, HELPERS.strip() + "\n", "tmp = tempfile.mkdtemp(prefix='fuzz-')"]
    body += list(case["setup"])
    body += [f"{k} = {v}" for k, v in case["args"]]
    body.append(f"result = {target.call}")
    checked = target.check is not None and (case["kind"] == "valid" or case["tolerated"])
    if checked:
        env = [k for k, _ in case["args"]] + list(case["meta"].get("env", ()))
        args = ", ".join(f"{k!r}: {k}" for k in env)
        body += ["", "", bundle(target.check),
                 f"{target.check.__name__}(result, {{{args}}}, {case['meta']!r})",
                 "print('the check passed')"]
    else:
        body.append("print('returned', type(result).__name__)")
    return "\n".join(head) + "\n" + "\n".join(body) + "\n"
