"""The suite grids (metarobust.robust.grid): bad grids and severities refused with the reason,
and the suite levels growing from quick to full."""

from __future__ import annotations

import numpy as np
import pytest

from metarobust.robust import check_grid, suite_grid


@pytest.mark.parametrize("grid,words", [
    ({"bogus": [1]}, "unknown family 'bogus'"),
    ({"domain_shift:mars": [0]}, "unknown domain-shift target 'mars'"),
    ({"label_noise_paired": [1.5]}, "must be in [0, 1]"),
    ({"label_noise_paired": [float("nan")]}, "must be in [0, 1]"),
    ({"fgsm": [-1 / 255]}, "finite and >= 0"),
    ({"gaussian_noise": []}, "at least one strength"),
    ({"clean": [0.3]}, "takes no strength"),
    ({}, "non-empty mapping"),
])
def test_bad_grids(grid, words):
    with pytest.raises((ValueError, TypeError)) as err:
        check_grid(grid)
    assert words in str(err.value)


def test_bad_severity():
    with pytest.raises(ValueError, match="whole numbers 1..5"):
        check_grid({"corruption:gaussian_blur": [0]})
    with pytest.raises(ValueError, match="unknown corruption 'melt'"):
        check_grid({"corruption:melt": [1]})


def test_suite_levels_grow():
    quick, default, full = (suite_grid(s, "omniglot") for s in ("quick", "default", "full"))
    assert set(quick) <= set(default) <= set(full)
    for fam in default:
        assert set(default[fam]) <= set(full[fam])
    assert "domain_shift:fashion_mnist" in quick and "domain_shift:glyphs" in quick
    assert list(suite_grid("quick", "glyphs")).count("domain_shift:omniglot") == 1
    assert all(np.isfinite(v).all() for v in map(np.asarray, full.values()))
