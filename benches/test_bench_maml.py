"""pytest-benchmark suite: one MAML meta-training step (``zero_grad`` + meta-gradient of a
meta-batch) with metarobust's ``MAML`` (loop and vmap paths) against a learn2learn-style
reference (:class:`metarobust.bench.ReferenceMAML`), second and first order, on Finn et
al.'s Omniglot Conv-4 (``conv4_finn``, 28x28), 5-way 1-shot 15-query, one inner step at
``inner_lr`` 0.4 (candidates from :mod:`metarobust.bench`).

Not part of the normal tests (``testpaths = ["tests"]``); tiny sizes (2 tasks, synthetic
images) so that

    pytest benches/test_bench_maml.py --benchmark-disable

runs in seconds. Before any timing, every candidate's meta-gradient is checked equal
(``allclose``, float64) to the reference's on the same batch from the same initial
weights, so the timings compare the same computation. Full size (meta-batch 32), peak
memory and ratios: ``python benches/compare.py maml``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarobust import bench

pytest.importorskip("pytest_benchmark")

TASKS = 2
WAYS, SHOTS, QUERIES = bench.MAML_SETTING


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20 * 20, 1, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(20, dtype=np.int64), 20)
    return bench.maml_batch(TASKS, WAYS, SHOTS, QUERIES, images=images, labels=labels)


@pytest.fixture(scope="module")
def agreement(batch):
    """Checked once per module, before the benchmarks: order -> candidate -> max error."""
    return {order: bench.check_maml_agree(batch, order, tasks=TASKS)
            for order in bench.MAML_ORDERS}


@pytest.mark.parametrize("order", bench.MAML_ORDERS)
def test_maml_agree(agreement, order):
    errors = agreement[order]
    assert set(errors) == set(bench.MAML_CANDIDATES) - {"reference"}
    assert errors["loop"] < 1e-9  # the same operations as the reference
    assert errors["threads"] < 1e-9
    assert errors["vmap"] < 1e-6
    assert errors["plain"] < 1e-9  # the reference without the module cloning
    assert errors["unfused"] < 1e-9  # float64: torch's first block either way


@pytest.mark.parametrize("candidate", bench.MAML_CANDIDATES)
@pytest.mark.parametrize("order", bench.MAML_ORDERS)
def test_maml_step(benchmark, batch, agreement, order, candidate):
    assert candidate == "reference" or candidate in agreement[order]
    fn = bench.maml_candidates(batch, order, [candidate])[candidate]
    benchmark.group = f"maml {order} order, {TASKS} tasks {WAYS}w{SHOTS}s{QUERIES}q"
    benchmark.extra_info["tasks_per_call"] = TASKS
    net = benchmark(fn)
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_reference_rejects_an_unknown_style():
    with pytest.raises(ValueError, match="style: expected one of"):
        bench.ReferenceMAML(torch.nn.Linear(2, 2), style="higher")
