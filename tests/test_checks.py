"""metarobust._checks.check_int: ints in a range, everything else named."""

from __future__ import annotations

import numpy as np
import pytest

from metarobust._checks import check_int


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
