"""Corruption benchmark: what corrupting the queries inside the Rust sampler costs.

The Rust sampler with ``corruption=name`` (applied to the queries, severity 3, in the same
parallel pass) against the same sampler without, 5-way 1-shot 15-query, batch 64, Omniglot
28x28: the ratio ``corrupted / clean`` of the best rounds' times per batch (target: at most
2, see :data:`metarobust.bench.report.TARGETS`). The corruptions with a finite set of
results per image are timed in the steady state of a long run (the sampler's cache built,
in the warm-up) and again with the cache off, every item computed.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..corruption_info import CORRUPTIONS
from ..episodes import EpisodeSampler
from .sampler import DEFAULT_BATCH, DTYPES, _rust_batches, _setting, omniglot_like
from .timing import DEFAULT_MIN_TIME, DEFAULT_REPEATS, _stats, measure

CORRUPTION_SETTING = (5, 1, 15)
CORRUPTION_SEVERITY = 3
_CACHE_OFF = " (cache off)"


def _warm_cache(sampler: EpisodeSampler, fn: Callable, images: np.ndarray, batch: int,
                per_episode: int, dtype: str) -> None:
    """Draws batches until the sampler's corruption cache is built (a cache of at most two
    results per image is built once the batches have corrupted that many items)."""
    per_batch = batch * per_episode
    for _ in range(-(-2 * len(images) // max(per_batch, 1)) + 1):
        if sampler._core.cache_built(dtype):
            break
        fn()


def corruption_candidates(images: np.ndarray, labels: np.ndarray,
                          setting: tuple[int, int, int] = CORRUPTION_SETTING,
                          batch: int = DEFAULT_BATCH, dtype: str = "float32",
                          severity: int = CORRUPTION_SEVERITY, seed: int = 0,
                          names: Iterable[str] | None = None,
                          cache: bool = True) -> dict[str, Callable]:
    """``clean`` and one candidate per corruption name: consecutive ``sample_batch`` calls
    of the same sampler settings, the corrupted ones with ``corruption=name`` (queries).

    cache: the samplers' default corruption cache (see :class:`EpisodeSampler`), warmed up
    here until built where the corruption has one: the steady state of a long run. False:
    every corrupted item computed (``corruption_cache_mb=0``). Each candidate's ``cached``
    attribute says whether its sampler reads a built cache."""
    ways, shots, queries = setting
    names = ("clean", *CORRUPTIONS) if names is None else tuple(names)
    out: dict[str, Callable] = {}
    for name in names:
        if name != "clean" and name not in CORRUPTIONS:
            raise ValueError(f"corruption candidate: expected 'clean' or one of "
                             f"{CORRUPTIONS}, got {name!r}")
        corruption: dict[str, Any] = (
            {} if name == "clean" else dict(corruption=name, severity=severity))
        sampler = EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries,
                                 seed=seed, dtype=dtype, **corruption,
                                 corruption_cache_mb=256 if cache else 0)
        fn = _rust_batches(sampler, batch)
        if name != "clean" and cache:
            _warm_cache(sampler, fn, images, batch, ways * queries, dtype)
        fn.cached = name != "clean" and sampler._core.cache_built(dtype)  # type: ignore[attr-defined]
        out[name] = fn
    return out


def _dtype_candidates(images: np.ndarray, labels: np.ndarray,
                      setting: tuple[int, int, int], batch: int, dtype: str, severity: int,
                      names: Iterable[str] | None) -> tuple[dict[str, Callable], list[str]]:
    """One dtype's candidates: ``clean`` (always), the ``names``, and each cached one again
    with its cache off (``<name> (cache off)``); and the names of the cached ones."""
    cands = corruption_candidates(images, labels, setting, batch, dtype, severity,
                                  names=names)
    if "clean" not in cands:
        cands = corruption_candidates(images, labels, setting, batch, dtype, severity,
                                      names=["clean"]) | cands
    cached = [n for n, fn in cands.items() if fn.cached]  # type: ignore[attr-defined]
    off = corruption_candidates(images, labels, setting, batch, dtype, severity,
                                names=cached, cache=False)
    return cands | {f"{n}{_CACHE_OFF}": fn for n, fn in off.items()}, cached


def _cache_label(key: str, cached: list[str]) -> str:
    """The ``cache`` column: ``-`` (clean), ``off``, ``built`` or ``none`` (no cache)."""
    name = key.removesuffix(_CACHE_OFF)
    if name == "clean":
        return "-"
    if key != name:
        return "off"
    return "built" if name in cached else "none"


def bench_corruptions(images: np.ndarray | None = None, labels: np.ndarray | None = None,
                      setting: tuple[int, int, int] = CORRUPTION_SETTING,
                      batch: int = DEFAULT_BATCH, dtypes: Sequence[str] = DTYPES,
                      severity: int = CORRUPTION_SEVERITY, repeats: int = DEFAULT_REPEATS,
                      min_time: float = DEFAULT_MIN_TIME,
                      names: Iterable[str] | None = None) -> list[dict]:
    """One row per (dtype, candidate): ms per batch, episodes/s and ``x clean`` (time per
    batch over the clean sampler's, best rounds, measured interleaved in one process).
    ``cache``: "built" (the default sampler, its corruption cache built), "none" (the
    corruption has no cache) or "off" (the same corruption computed for every item)."""
    if images is None or labels is None:
        images, labels, _ = omniglot_like()
    rows = []
    for dtype in dtypes:
        cands, cached = _dtype_candidates(images, labels, setting, batch, dtype, severity,
                                          names)
        times = measure(cands, repeats, min_time)
        clean = _stats(times["clean"])[0]
        for key, samples in times.items():
            t_best, t_med = _stats(samples)
            rows.append({
                "setting": _setting(*setting), "batch": batch, "dtype": dtype,
                "severity": severity, "corruption": key.removesuffix(_CACHE_OFF),
                "cache": _cache_label(key, cached),
                "ms/batch": t_best * 1e3, "median ms": t_med * 1e3,
                "episodes/s": batch / t_best, "x clean": t_best / clean,
            })
        gc.collect()
    return rows


def corruption_summary(rows: list[dict]) -> list[dict]:
    """Per corruption: the corrupted/clean time ratio of each dtype side by side, with the
    sampler's default (its cache where the corruption has one) and with the cache off."""
    out: dict[str, dict] = {}
    for r in rows:
        if r["corruption"] == "clean":
            continue
        row = out.setdefault(r["corruption"], {"corruption": r["corruption"],
                                               "severity": r["severity"], "cached": "no"})
        if r["cache"] == "off":
            row[f"{r['dtype']} cache off"] = r["x clean"]
        else:
            row[f"{r['dtype']} corrupted/clean"] = r["x clean"]
            row.setdefault(f"{r['dtype']} cache off", math.nan)
            if r["cache"] == "built":
                row["cached"] = "yes"
    return list(out.values())
