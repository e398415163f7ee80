"""Targets: ``mr.robust.clopper_pearson_lower`` (checked against the regularised incomplete
beta function: P(X >= k) for X ~ Binomial(n, p) equals alpha at the bound) and
``mr.robust.Smoothing`` (the certification settings, kept as given)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from ..case import Break, Draft, Target
from ..spec import Float, Int
from ..values import num


@st.composite
def valid_bound(draw):
    trials = draw(st.integers(1, 10**6) | st.sampled_from([1, 2, 1000, 10**8]))
    successes = draw(st.integers(0, trials) if trials < 10**7 else
                     st.sampled_from([0, 1, trials // 2, trials]))
    alpha = draw(st.floats(1e-9, 0.5) | st.sampled_from([0.001, 0.05]))
    draft = Draft()
    draft.val("successes", num(successes), value=successes)
    draft.val("trials", num(trials), value=trials)
    draft.val("alpha", repr(alpha), value=alpha)
    return draft


def check_bound(result, args, meta):
    from scipy.special import betainc

    k, n, alpha = int(args["successes"]), int(args["trials"]), float(args["alpha"])
    assert isinstance(result, float) and 0.0 <= result <= 1.0, f"{result!r}"
    if k == 0:
        assert result == 0.0, f"{result!r} for no successes"
        return
    assert result <= k / n + 1e-12, f"bound {result} above the proportion {k / n}"
    tail = float(betainc(k, n - k + 1, result))  # P(X >= k) at p = result
    if math.isclose(tail, alpha, rel_tol=1e-6, abs_tol=1e-300):
        return
    # large n: the tail changes by more than 1e-6 between neighbouring doubles; the root
    # must then lie within a few of them
    below, above = np.nextafter(result, 0.0), np.nextafter(result, 1.0)
    for _ in range(7):
        below, above = np.nextafter(below, 0.0), np.nextafter(above, 1.0)
    assert float(betainc(k, n - k + 1, below)) <= alpha <= \
        float(betainc(k, n - k + 1, above)), \
        f"P(X >= {k}) = {tail} at the bound {result}, expected {alpha}"


def bound_breaks(draft):
    n = draft.facts["trials"]["value"]
    return [Break("successes", num(n + 1), "more successes than trials",
                  ("successes", "trials"))]


@st.composite
def valid_smoothing(draw):
    draft = Draft()
    draft.val("sigma", repr(draw(st.floats(1e-3, 2.0))))
    draft.val("samples", num(draw(st.integers(1, 10**6))))
    draft.val("n0", num(draw(st.integers(1, 1000))))
    draft.val("alpha", repr(draw(st.floats(1e-9, 0.5))))
    draft.val("episodes", num(draw(st.integers(1, 10**4))))
    return draft


def check_smoothing(result, args, meta):
    got = (result.sigma, result.samples, result.n0, result.alpha, result.episodes)
    want = tuple(args[k] for k in ("sigma", "samples", "n0", "alpha", "episodes"))
    assert got == want, f"{got}, expected {want}"


TARGETS = [
    Target(name="robust.clopper_pearson_lower",
           call="mr.robust.clopper_pearson_lower(successes, trials, alpha)",
           params={"successes": Int(0, huge="tolerated"), "trials": Int(1, 10**8),
                   "alpha": Float(0.0, 1.0, lo_open=True, hi_open=True)},
           valid=valid_bound(), check=check_bound, relational=bound_breaks),
    Target(name="robust.Smoothing",
           call="mr.robust.Smoothing(sigma=sigma, samples=samples, n0=n0, alpha=alpha, "
                "episodes=episodes)",
           params={"sigma": Float(0.0, 1e3, lo_open=True), "samples": Int(1, 10**8),
                   "n0": Int(1, 10**8), "alpha": Float(0.0, 0.5, lo_open=True),
                   "episodes": Int(1, 10**9)},
           valid=valid_smoothing(), check=check_smoothing),
]
