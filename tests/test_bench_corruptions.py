"""metarobust.bench.corruptions: the candidates corrupt the queries only, the cache states
are told apart, and the ratios add up (a tiny dataset)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarobust.bench import corruptions as bc
from metarobust.corruption_info import CORRUPTIONS

SETTING, BATCH = (2, 1, 2), 2


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of four 12x12 glyphs: a dark stroke on white, at random places."""
    rng = np.random.default_rng(0)
    images = np.full((40, 1, 12, 12), 255, np.uint8)
    for im in images:
        r, c = rng.integers(2, 8, 2)
        im[0, r:r + 3, c:c + 2] = 0
    return images, np.repeat(np.arange(10), 4)


def test_candidates_corrupt_the_queries_only(data):
    # cache=False: no warm-up batches, so both draw episodes 0..BATCH-1 first
    cands = bc.corruption_candidates(*data, SETTING, BATCH, "uint8",
                                     names=["clean", "gaussian_noise"], cache=False)
    clean, noisy = cands["clean"](), cands["gaussian_noise"]()
    assert torch.equal(noisy.support_x, clean.support_x)
    assert torch.equal(noisy.classes, clean.classes)
    assert not torch.equal(noisy.query_x, clean.query_x)
    assert not cands["clean"].cached and not cands["gaussian_noise"].cached


def test_default_names_and_cache_states(data):
    cands = bc.corruption_candidates(*data, SETTING, BATCH, "uint8")
    assert list(cands) == ["clean", *CORRUPTIONS]
    cached = {n for n, fn in cands.items() if fn.cached}
    assert "rotate" in cached and "gaussian_noise" not in cached and "clean" not in cached
    off = bc.corruption_candidates(*data, SETTING, BATCH, "uint8", names=["rotate"],
                                   cache=False)
    assert not off["rotate"].cached


def test_unknown_corruption_is_named(data):
    with pytest.raises(ValueError, match="'fog'"):
        bc.corruption_candidates(*data, names=["fog"])


def test_cache_labels():
    assert bc._cache_label("clean", []) == "-"
    assert bc._cache_label("rotate (cache off)", ["rotate"]) == "off"
    assert bc._cache_label("rotate", ["rotate"]) == "built"
    assert bc._cache_label("elastic", ["rotate"]) == "none"


def test_bench_corruptions_rows_and_summary(data):
    rows = bc.bench_corruptions(*data, SETTING, BATCH, ["uint8"], severity=2, repeats=1,
                                min_time=1e-4, names=["gaussian_noise", "rotate"])
    keys = [(r["corruption"], r["cache"]) for r in rows]
    assert keys == [("clean", "-"), ("gaussian_noise", "none"), ("rotate", "built"),
                    ("rotate", "off")]
    clean_ms = rows[0]["ms/batch"]
    for r in rows:
        assert r["setting"] == "2w1s2q" and r["severity"] == 2 and r["batch"] == BATCH
        assert r["x clean"] == pytest.approx(r["ms/batch"] / clean_ms)
    summary = {s["corruption"]: s for s in bc.corruption_summary(rows)}
    assert set(summary) == {"gaussian_noise", "rotate"}
    assert summary["rotate"]["cached"] == "yes" and summary["gaussian_noise"]["cached"] == "no"
    assert summary["rotate"]["uint8 cache off"] == rows[3]["x clean"]
    assert summary["rotate"]["uint8 corrupted/clean"] == rows[2]["x clean"]
    assert math.isnan(summary["gaussian_noise"]["uint8 cache off"])
