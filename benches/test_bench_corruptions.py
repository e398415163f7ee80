"""pytest-benchmark suite: the Rust episode sampler with each corruption applied to the
queries (severity 3) against the same sampler without (candidates from
:mod:`metarobust.bench`).

Not part of the normal tests (``testpaths = ["tests"]``); run with

    METAROBUST_DATA=../shared/data pytest benches/test_bench_corruptions.py

One benchmark group per dtype, 5-way 1-shot 15-query, batch 64. Without METAROBUST_DATA the
data is synthetic, of Omniglot's shape. The corrupted/clean ratio table (target: at most 2):
``python benches/compare.py corruptions``.
"""

from __future__ import annotations

import pytest
import torch

from metarobust import bench

pytest.importorskip("pytest_benchmark")

BATCH = bench.DEFAULT_BATCH
SETTING = bench.CORRUPTION_SETTING


@pytest.fixture(scope="module")
def data():
    images, labels, _source = bench.omniglot_like()
    return images, labels


@pytest.mark.parametrize("corruption", ["clean", *bench.CORRUPTIONS])
@pytest.mark.parametrize("dtype", bench.DTYPES)
def test_corruption(benchmark, data, dtype, corruption):
    images, labels = data
    fn = bench.corruption_candidates(images, labels, SETTING, BATCH, dtype,
                                     names=[corruption])[corruption]
    benchmark.group = "corruptions {}w{}s{}q batch {} {}".format(*SETTING, BATCH, dtype)
    benchmark.extra_info["episodes_per_call"] = BATCH
    benchmark.extra_info["severity"] = bench.CORRUPTION_SEVERITY
    out = benchmark(fn)
    ways, shots, queries = SETTING
    assert out.query_x.shape == (BATCH, ways * queries, *images.shape[1:])
    assert out.query_x.dtype == (torch.float32 if dtype == "float32" else torch.uint8)
