"""metarobust._checks: ints, reals, bools, choices and output sizes in range, everything
else named."""

from __future__ import annotations

import numpy as np
import pytest

from metarobust._checks import check_bool, check_choice, check_int, check_nbytes, check_real


def test_ints_and_numpy_ints_in_range():
    assert check_int(3, "ways", 1) == 3
    value = check_int(np.int64(2**63 - 1), "seed", 0, 2**64 - 1)
    assert value == 2**63 - 1 and type(value) is int
    assert check_int(2**64 - 1, "seed", 0, 2**64 - 1) == 2**64 - 1


@pytest.mark.parametrize("value, low, high, error, words", [
    (True, 0, None, TypeError, "ways: expected an int, got True (bool)"),
    (2.0, 0, None, TypeError, "ways: expected an int, got 2.0 (float)"),
    ("3", 0, None, TypeError, "ways: expected an int, got '3' (str)"),
    (0, 1, None, ValueError, "ways: must be >= 1, got 0"),
    (6, 1, 5, ValueError, "ways: must be in [1, 5], got 6"),
    (2**64, 0, 2**64 - 1, ValueError, f"ways: must be in [0, {2**64 - 1}], got {2**64}"),
])
def test_bad_values_are_named(value, low, high, error, words):
    with pytest.raises(error) as exc:
        check_int(value, "ways", low, high)
    assert str(exc.value) == words


def test_reals_in_range():
    assert check_real(3, "tol", 0.0, low_open=True) == 3.0
    assert type(check_real(np.float32(0.25), "trim", 0.0, 0.5, high_open=True)) is float
    assert check_real(0.0, "trim", 0.0, 0.5, high_open=True) == 0.0


@pytest.mark.parametrize("value, kwargs, error, words", [
    (None, {}, TypeError, "tol: expected a real number, got None (NoneType)"),
    (True, {}, TypeError, "tol: expected a real number, got True (bool)"),
    ("0.1", {}, TypeError, "tol: expected a real number, got '0.1' (str)"),
    (float("nan"), {}, ValueError, "tol: must be finite, got nan"),
    (float("inf"), dict(low=0.0, low_open=True), ValueError,
     "tol: must be finite and > 0, got inf"),
    (0, dict(low=0.0, low_open=True), ValueError, "tol: must be finite and > 0, got 0"),
    (0.5, dict(low=0.0, high=0.5, high_open=True), ValueError, "tol: must be in [0, 0.5), got 0.5"),
    (2, dict(high=1.0), ValueError, "tol: must be finite and <= 1, got 2"),
])
def test_bad_reals_are_named(value, kwargs, error, words):
    with pytest.raises(error) as exc:
        check_real(value, "tol", **kwargs)
    assert str(exc.value) == words


def test_bools_and_choices():
    assert check_bool(np.bool_(True), "flag") is True
    for value in (0, 1, "yes", None):
        with pytest.raises(TypeError, match="flag: expected a bool"):
            check_bool(value, "flag")
    assert check_choice("a", "kind", ("a", "b")) == "a"
    for value in ("c", None, ["a"], {"a": 1}):
        with pytest.raises(ValueError, match="kind: expected one of a, b; got"):
            check_choice(value, "kind", ("a", "b"))


def test_output_sizes_beyond_memory_are_refused():
    assert check_nbytes(2**20, "count", "the batch") == 2**20
    with pytest.raises(ValueError, match=r"count: the batch would take \d+ bytes, more than"):
        check_nbytes(2**70, "count", "the batch")
