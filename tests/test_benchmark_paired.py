"""metarobust.benchmark.paired: paired differences and the significant best, against NumPy
and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from metarobust.benchmark import paired_difference, paired_rows, significant_best


def test_paired_difference_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 300)
    b = a - 0.02 + rng.normal(0, 0.05, 300)
    d = a - b
    mean, ci = paired_difference(a.tolist(), b.tolist())
    assert mean == pytest.approx(d.mean(), abs=1e-12)
    assert ci == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(d.size), rel=1e-12)
    # pairing: far narrower than the unpaired interval of the two means
    unpaired = 1.96 * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert ci < unpaired / 3
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([1.0, 0.5], [1.0])


def test_significant_best():
    base = np.linspace(0.2, 0.9, 100)
    shift = 0.01 * np.sin(np.arange(100))  # tiny per-episode wobble
    clear = {"a": (base + 0.05).tolist(), "b": base.tolist(), "c": (base + shift).tolist()}
    assert significant_best(clear) == "a"
    # a lead over b but a tie with c: no best
    tied = {**clear, "c": (base + 0.05 + shift).tolist()}
    assert significant_best(tied) is None
    assert significant_best({"a": [1.0, 0.0]}) is None


def test_paired_rows_keep_the_order_and_mark_the_reference():
    row = {"family": "clean", "setting": "5-way 1-shot", "strength": 0.0, "accuracy": 0.5,
           "ci95": 0.1}
    rows = paired_rows({"r": [{**row, "per_episode": [0.4, 0.6]}],
                        "m": [{**row, "per_episode": [0.6, 0.9], "accuracy": 0.75}]}, "r")
    assert [(r["method"], r["diff"], r["best"]) for r in rows] == [
        ("r", None, False), ("m", pytest.approx(0.25), True)]  # lead 0.25 ± 0.098
    assert rows[1]["diff_ci95"] == pytest.approx(1.96 * np.std([0.2, 0.3], ddof=1) / np.sqrt(2))
