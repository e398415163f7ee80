"""Argument checks shared across the package: errors name the argument, the value and what
is allowed, so that bad input fails at the call that received it, never deep inside torch,
NumPy or the Rust core."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "check_bool", "check_choice", "check_int", "check_nbytes", "check_path", "check_real",
    "physical_memory",
]


def check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; TypeError for non-ints (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: must be {allowed}, got {value}")
    return value


def check_real(value: Any, name: str, low: float | None = None, high: float | None = None,
               *, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the range the bounds give (``low_open``/``high_open``
    exclude a bound); TypeError for anything but a real number (bools, strings, None and
    tensors included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {value!r} "
                        f"({type(value).__name__})")
    number = float(value)
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if not math.isfinite(number) or below or above:
        if low is not None and high is not None:
            allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            allowed = f"finite and {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            allowed = f"finite and {'<' if high_open else '<='} {high:g}"
        else:
            allowed = "finite"
        raise ValueError(f"{name}: must be {allowed}, got {value!r}")
    return number


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool; TypeError for anything else (0, 1 and strings included), since a
    truthy stand-in is more often a misplaced argument than a flag."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``allowed``, else a ValueError listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}; got {value!r}")
    return value


def check_path(value: Any, name: str) -> Path:
    """``value`` (a str or an ``os.PathLike``, not empty) as a Path."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a path (str or os.PathLike), got {value!r} "
                        f"({type(value).__name__})")
    try:
        path = Path(value)
    except TypeError:  # a PathLike whose __fspath__ gives bytes
        raise TypeError(f"{name}: expected a path whose os.fspath is a str, got "
                        f"{value!r}") from None
    if not str(value):
        raise ValueError(f"{name}: expected a path, got an empty string")
    return path


def physical_memory() -> int:
    """This machine's physical memory in bytes (2**40 where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return 2**40


def check_nbytes(nbytes: int, name: str, what: str) -> int:
    """``nbytes``, the size of the output that argument ``name`` asks for (``what`` says of
    what), if it fits in this machine's physical memory. A request beyond it is a mistake
    to report before allocating (with overcommit the allocation may even succeed and the
    process be killed while filling it)."""
    limit = physical_memory()
    if nbytes > limit:
        raise ValueError(f"{name}: {what} would take {nbytes} bytes, more than this machine's "
                         f"{limit} bytes of memory")
    return nbytes
