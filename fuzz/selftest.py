"""Targets that misbehave on purpose, for the harness's own tests
(tests/test_fuzz_harness.py): each takes one int ``x >= 0`` and aborts the process, sleeps,
rejects bad ``x`` with a named ValueError, raises RuntimeError, or returns a wrong result."""

from __future__ import annotations

from hypothesis import strategies as st

from .case import Draft, Target
from .spec import Int


def _draft(body: str) -> st.SearchStrategy[Draft]:
    """Drafts with ``x`` in 0..9 and ``subject(x)`` defined by ``body``."""

    def make(x: int) -> Draft:
        draft = Draft(setup=[f"def subject(x):\n{body}"])
        draft.val("x", str(x), value=x)
        return draft

    return st.integers(0, 9).map(make)


VALID_X = "isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= x < 2**31"


def check_identity(result, args, meta):
    assert result == args["x"], f"{result!r}, expected {args['x']!r}"


def _target(name: str, body: str) -> Target:
    spec = Int(0, 2**31 - 1, junk_skip=frozenset({"true"}))
    return Target(name=f"selftest.{name}", call="subject(x)", params={"x": spec},
                  valid=_draft(body), check=check_identity)


TARGETS = [
    _target("abort", "    os.abort()"),
    _target("sleep", "    __import__('time').sleep(600)"),
    _target("named", f"    if not ({VALID_X}):\n        raise ValueError('x: bad')\n"
                     "    return x"),
    _target("runtime", f"    if not ({VALID_X}):\n        raise RuntimeError('x: bad')\n"
                       "    return x"),
    _target("wrong", "    return x + 1"),
]
