"""How a case's outcome is decided (the rules the table counts by).

* ``returned``: a valid case (or a tolerated break) returned and its result passed the
  target's reference check, its inputs left unchanged.
* ``rejected``: a broken or junk case raised ValueError, TypeError or OverflowError (or a
  type the target lists, e.g. FileNotFoundError for a missing path) whose message names the
  broken argument: one of the case's names appears as a whole word (not inside a longer
  identifier) in the first :data:`HEAD` characters of the message; a name given as
  ``=value`` (the argument's value as text, e.g. a path) or as ``*name`` (a file inside
  the path the argument names, e.g. ``*images.npy``) may appear anywhere.
* ``unclear``: a broken or junk case raised one of those types without naming the argument
  in its message (a name only in an exception note, as pyo3 adds to failed conversions,
  does not count: ``str(error)`` never shows it),
  or raised any other Exception (RuntimeError, IndexError, MemoryError, KeyError...); a valid
  case raised an exception other than ValueError/TypeError/OverflowError.
* ``crash``: the worker died (signal, abort, segfault, exit), or the call raised a
  BaseException that is not an Exception (pyo3's PanicException, SystemExit...).
* ``hang``: the case ran past the per-case timeout (the worker is killed).
* ``wrong``: a valid case returned a result that fails the reference check, changed one of
  its inputs, or raised ValueError/TypeError/OverflowError (a valid input refused); a broken
  or junk case returned normally (a bad input accepted), unless tolerated and correct.
* ``error``: the harness itself failed building the case (never expected).
"""

from __future__ import annotations

import re

OUTCOMES = ("returned", "rejected", "unclear", "crash", "hang", "wrong", "error")
FAILING = ("unclear", "crash", "hang", "wrong", "error")
REJECTIONS = ("ValueError", "TypeError", "OverflowError")
HEAD = 60


def names_argument(message: str, names: list[str], value: str | None = None) -> bool:
    """Whether ``message`` names the broken argument (see the module docstring)."""
    head = message[:HEAD]
    for n in names:
        if n == "=value":
            if value and len(value) >= 3 and value in message:
                return True
            continue
        if n.startswith("*"):  # a file name: anywhere (it sits at the end of a path)
            if n[1:] in message:
                return True
            continue
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", head):
            return True
    return False


def exception_outcome(case: dict, exc: BaseException, rejects: tuple[str, ...],
                      value: str | None) -> tuple[str, str]:
    """``(outcome, detail)`` of a call that raised ``exc``."""
    kind = type(exc).__name__
    detail = f"{kind}: {exc}"
    notes = getattr(exc, "__notes__", None)
    if notes:  # pyo3 names the argument of a failed conversion in a note, not the message
        detail += " [note: " + "; ".join(map(str, notes)) + "]"
    if not isinstance(exc, Exception):
        return "crash", detail
    mro = {c.__name__ for c in type(exc).__mro__}
    is_rejection = bool(mro & set(REJECTIONS))
    if case["kind"] == "valid":
        return ("wrong", "valid input refused: " + detail) if is_rejection else ("unclear", detail)
    if (is_rejection or mro & set(rejects)) and names_argument(str(exc), case["names"], value):
        return "rejected", detail
    return "unclear", detail


def return_outcome(case: dict, check_error: str | None) -> tuple[str, str]:
    """``(outcome, detail)`` of a call that returned; ``check_error`` is None when the
    reference check passed."""
    if case["kind"] == "valid" or case["tolerated"]:
        if check_error is None:
            return "returned", ""
        return "wrong", check_error
    return "wrong", "bad input accepted" + (f" (and {check_error})" if check_error else "")
