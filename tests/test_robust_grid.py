"""The suite grids (metarobust.robust.grid): bad grids and severities refused with the reason,
the suite levels growing from quick to full, and label-noise cells that corrupt what their
strength says (or are skipped with the reason)."""

from __future__ import annotations

import numpy as np
import pytest

from metarobust.robust import check_grid, suite_grid
from metarobust.robust.grid import SUITES, cells


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
    assert "certified_l2" not in quick and default["certified_l2"][0] == 0.0
    assert all(np.isfinite(v).all() for v in map(np.asarray, full.values()))


@pytest.mark.parametrize("level", SUITES)
@pytest.mark.parametrize("source", ["glyphs", "omniglot"])
@pytest.mark.parametrize("ways, shots", [(5, 1), (5, 5), (20, 1), (20, 5)])
def test_every_label_noise_row_changes_labels_in_every_episode(level, source, ways, shots):
    # a row at strength > 0 must corrupt what it says: at least one support item of every
    # episode, the fraction its `effective` reports; no row silently equals the clean one
    import metarobust as mr
    from metarobust.robust import apply_label_noise

    ds = mr.data.glyphs(num_classes=60, per_class=8, image_size=8, seed=0)
    grid = {f: s for f, s in suite_grid(level, source).items() if f.startswith("label_noise")}
    evaluated = 0
    for cell in cells(check_grid(grid), ways, shots, (5,), "query", 20):
        if cell.strength == 0:
            assert cell.perturb is None and cell.effective == 0
            continue
        assert cell.skip is None, cell  # every suite rate corrupts something at these settings
        n = cell.perturb[2]
        assert cell.effective == n / (cell.ways * cell.shots) > 0
        batch = mr.EpisodeSampler(ds, ways=cell.ways, shots=cell.shots, queries=1,
                                  seed=1).sample_batch(0, 8)
        noisy, counts = apply_label_noise(batch, cell.perturb[1], cell.strength, seed=4,
                                          dataset=ds)
        if cell.perturb[1] == "outlier":
            changed = (noisy.support_x != batch.support_x).flatten(2).any(2)
        else:
            changed = noisy.support_y != batch.support_y
        assert (changed.sum(1) == n).all() and n >= 1, cell
        evaluated += 1
    assert evaluated > 0


def test_a_rate_that_corrupts_nothing_is_skipped_with_the_reason():
    todo = cells({"label_noise_paired": [0.05, 0.5]}, 5, 1, (5,), "query", 20)
    tiny_rate = [c for c in todo if c.strength == 0.05]
    assert [c.shots for c in tiny_rate] == [1, 5]
    assert tiny_rate[0].skip == "rate 0.05 corrupts none of the 5 support items at 5-way 1-shot"
    assert tiny_rate[1].skip is None and tiny_rate[1].effective == 1 / 25
