"""pytest-benchmark suite: the Rust episode sampler against NumPy, a per-item DataLoader and
a plain memcpy of the same bytes (candidates from :mod:`metarobust.bench`).

Not part of the normal tests (``testpaths = ["tests"]``); run with

    METAROBUST_DATA=../shared/data pytest benches/test_bench_sampler.py

One benchmark group per (setting, batch, dtype). Without METAROBUST_DATA the data is
synthetic, of Omniglot's shape. Ratio tables: ``python benches/compare.py sampler``.
"""

from __future__ import annotations

import pytest
import torch

from metarobust import bench

pytest.importorskip("pytest_benchmark")

BATCH = bench.DEFAULT_BATCH


@pytest.fixture(scope="module")
def data():
    images, labels, _source = bench.omniglot_like()
    return images, labels


def _id(setting: tuple[int, int, int]) -> str:
    return "{}w{}s{}q".format(*setting)


@pytest.mark.parametrize("candidate", bench.SAMPLER_CANDIDATES)
@pytest.mark.parametrize("dtype", bench.DTYPES)
@pytest.mark.parametrize("setting", bench.DEFAULT_SAMPLER_SETTINGS, ids=_id)
def test_sampler(benchmark, data, setting, dtype, candidate):
    ways, shots, queries = setting
    images, labels = data
    fn = bench.sampler_candidates(images, labels, ways, shots, queries, BATCH, dtype,
                                  names=[candidate])[candidate]
    benchmark.group = f"sampler {_id(setting)} batch {BATCH} {dtype}"
    benchmark.extra_info["episodes_per_call"] = BATCH
    out = benchmark(fn)
    if candidate != "memcpy":
        c, h, w = images.shape[1:]
        assert out.support_x.shape == (BATCH, ways * shots, c, h, w)
        assert out.query_x.shape == (BATCH, ways * queries, c, h, w)
        want = torch.float32 if dtype == "float32" else torch.uint8
        assert out.support_x.dtype == out.query_x.dtype == want
