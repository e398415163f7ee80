"""Timing: every candidate measured in one process, interleaved.

Why interleaved: on a small or shared machine the load from other processes drifts over
seconds, so timing one candidate after another would credit that drift to whichever ran at
the wrong moment. Instead each of ``repeats`` rounds times every candidate once (a block of
calls lasting about ``min_time`` seconds, candidates in an order that rotates from round to
round, garbage collection off as in ``timeit``). A candidate's time is its best round (the
least disturbed by other load); the median round is reported beside it. Ratios compare best
rounds.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .memory import _minor_faults

DEFAULT_REPEATS = 7        # interleaved rounds of :func:`measure`
DEFAULT_MIN_TIME = 0.1     # seconds per timed block of calls


def _calibrate(fn: Callable[[], Any], min_time: float) -> int:
    """Calls of ``fn`` per timed block: enough for about ``min_time`` seconds (``fn`` is
    called once first, as a warm-up)."""
    fn()
    calls, elapsed = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min(0.02, min_time) or calls >= 1 << 20:
            break
        calls *= 2
    return max(1, math.ceil(min_time / (elapsed / calls)))


def _rotated(names: list[str], r: int) -> list[str]:
    """``names`` starting at position ``r`` (modulo their number): round ``r``'s order."""
    k = r % len(names)
    return names[k:] + names[:k]


def _timed_block(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """Seconds per call over ``n`` calls of ``fn`` with garbage collection off, and the
    minor page faults of the whole process meanwhile (NaN where they cannot be read)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        f0 = _minor_faults()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        seconds = (time.perf_counter() - t0) / n
        return seconds, _minor_faults() - f0
    finally:
        if enabled:
            gc.enable()


def measure(
    candidates: dict[str, Callable[[], Any]], repeats: int = DEFAULT_REPEATS,
    min_time: float = DEFAULT_MIN_TIME, faults: dict[str, float] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one value per round, rounds interleaved.

    Each candidate is warmed up and calibrated to a block of calls lasting about
    ``min_time``; then ``repeats`` rounds time one block of every candidate, in an order that
    rotates from round to round. ``faults``, when given, receives each candidate's minor
    page faults per call (``getrusage`` ``ru_minflt``, whole process) over the timed blocks:
    NaN where the ``resource`` module is missing.
    """
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    number = {name: _calibrate(fn, min_time) for name, fn in candidates.items()}
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in names}
    flt = dict.fromkeys(names, 0.0)
    for r in range(repeats):
        for name in _rotated(names, r):
            seconds, f = _timed_block(candidates[name], number[name])
            times[name].append(seconds)
            flt[name] += f
    if faults is not None:
        faults.update({k: flt[k] / (number[k] * repeats) for k in names})
    return times


def measure_steps(candidates: dict[str, Callable[[], Any]], repeats: int = 3,
                  warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call, one call per candidate per round, ``repeats`` rounds interleaved
    in rotating order after ``warmup`` untimed calls each (for calls long enough to time
    one by one, such as a meta-training step). ``gc.collect()`` before each call, garbage
    collection off during it."""
    if repeats < 1:
        raise ValueError(f"repeats: must be >= 1, got {repeats}")
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in _rotated(names, r):
            gc.collect()
            times[name].append(_timed_block(candidates[name], 1)[0])
    return times


def _stats(samples: Sequence[float]) -> tuple[float, float]:
    """``(best, median)`` of a candidate's rounds."""
    return min(samples), statistics.median(samples)


def _single_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with ``torch.set_num_threads(1)``, torch's thread count restored after."""
    def call() -> Any:
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(prev)

    return call
