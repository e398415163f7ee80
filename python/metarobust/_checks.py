"""Argument checks shared across the package: errors name the argument, the value and what
is allowed."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(value: Any, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; TypeError for non-ints (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: must be {allowed}, got {value}")
    return value
