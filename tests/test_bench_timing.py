"""metarobust.bench.timing: interleaved timing, its statistics and the one-thread wrapper."""

from __future__ import annotations

import gc
import math
import sys

import pytest
import torch

from metarobust.bench import timing


def test_measure_returns_one_positive_time_per_round_and_candidate():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1

    def b():
        calls["b"] += 1
        sum(range(100))

    faults: dict[str, float] = {}
    times = timing.measure({"a": a, "b": b}, repeats=3, min_time=1e-4, faults=faults)
    assert list(times) == ["a", "b"]
    for name, samples in times.items():
        assert len(samples) == 3
        assert all(0 < t < 1 for t in samples)
        assert calls[name] >= 3 + 2  # warm-up, calibration and three timed blocks
    assert set(faults) == {"a", "b"} and all(f >= 0 for f in faults.values())


def test_measure_times_with_garbage_collection_off_and_restores_it():
    seen = []
    timing.measure({"x": lambda: seen.append(gc.isenabled())}, repeats=2, min_time=1e-4)
    assert gc.isenabled()
    assert seen[0] is True      # the warm-up call runs as usual
    assert seen[-1] is False    # the timed blocks run with the collector off


@pytest.mark.parametrize("repeats", [0, -1])
def test_measure_and_measure_steps_reject_repeats_below_one(repeats):
    with pytest.raises(ValueError, match="repeats: must be >= 1"):
        timing.measure({"x": lambda: None}, repeats=repeats)
    with pytest.raises(ValueError, match="repeats: must be >= 1"):
        timing.measure_steps({"x": lambda: None}, repeats=repeats)


def test_measure_works_without_the_resource_module(monkeypatch):
    # `resource` is POSIX only: timing must not need it, the fault counts become NaN.
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now fails
    faults: dict[str, float] = {}
    times = timing.measure({"x": lambda: None}, repeats=2, min_time=1e-4, faults=faults)
    assert len(times["x"]) == 2 and all(t > 0 for t in times["x"])
    assert math.isnan(faults["x"])


def test_measure_steps_calls_each_candidate_warmup_plus_repeats_times_in_rotating_order():
    order = []
    cands = {n: (lambda n=n: order.append(n)) for n in "abc"}
    times = timing.measure_steps(cands, repeats=3, warmup=2)
    assert {n: len(t) for n, t in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert order[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up, candidate by candidate
    assert order[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert gc.isenabled()


def test_rotated_starts_each_round_one_further():
    names = ["a", "b", "c"]
    assert [timing._rotated(names, r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_stats_are_best_and_median():
    assert timing._stats([3.0, 1.0, 2.0, 10.0]) == (1.0, 2.5)
    assert timing._stats([4.0]) == (4.0, 4.0)


def test_single_thread_runs_on_one_thread_and_restores_the_count():
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert timing._single_thread(torch.get_num_threads)() == 1
        assert torch.get_num_threads() == 2

        def boom():
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            timing._single_thread(boom)()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(prev)
