"""The MAML sinusoid task family: ranges, formula, determinism, batching."""

import math

import numpy as np
import pytest
import torch

from metarobust.data import SinusoidTasks, sinusoid


@pytest.fixture(scope="module")
def batch():
    return sinusoid(shots=5, queries=10, seed=7).sample_batch(0, 4000)


def test_shapes_and_dtypes():
    t = sinusoid(shots=3, queries=4).sample(0)
    assert t.support_x.shape == (3, 1) and t.support_y.shape == (3, 1)
    assert t.query_x.shape == (4, 1) and t.query_y.shape == (4, 1)
    assert t.amplitude.shape == () and t.phase.shape == ()
    assert all(x.dtype == torch.float32 for x in t)
    b = sinusoid(shots=3, queries=4).sample_batch(10, 6)
    assert b.support_x.shape == (6, 3, 1) and b.query_y.shape == (6, 4, 1)
    assert b.amplitude.shape == (6,) and b.phase.shape == (6,)
    assert all(x.is_contiguous() for x in b)


def test_ranges(batch):
    a, p = batch.amplitude, batch.phase
    assert 0.1 <= a.min() and a.max() <= 5.0
    assert 0.0 <= p.min() and p.max() <= math.pi
    x = torch.cat([batch.support_x.flatten(), batch.query_x.flatten()])
    assert -5.0 <= x.min() and x.max() <= 5.0
    # uniform: means and spreads close to the theory (4000 tasks, 60000 points)
    assert abs(a.mean().item() - 2.55) < 0.1 and abs(p.mean().item() - math.pi / 2) < 0.06
    assert abs(x.mean().item()) < 0.06 and abs(x.var().item() - 100 / 12) < 0.2
    assert a.min() < 0.2 and a.max() > 4.9 and x.min() < -4.99 and x.max() > 4.99
    assert (np.histogram(a.numpy(), bins=10, range=(0.1, 5))[0] > 320).all()


def test_y_is_amplitude_sin_x_minus_phase(batch):
    a, p = batch.amplitude[:, None, None].double(), batch.phase[:, None, None].double()
    for x, y in ((batch.support_x, batch.support_y), (batch.query_x, batch.query_y)):
        np.testing.assert_allclose(y.double(), a * torch.sin(x.double() - p), atol=2e-5)


def test_deterministic_and_batch_equals_single():
    tasks = SinusoidTasks(shots=5, queries=10, seed=3)
    again = SinusoidTasks(shots=5, queries=10, seed=3)
    b = tasks.sample_batch(40, 5)
    for j in range(5):
        single = again.sample(40 + j)
        for field, value in zip(b._fields, b, strict=True):
            assert torch.equal(value[j], getattr(single, field)), field
    other = tasks.sample_batch(42, 2)  # any batch split gives the same tasks
    assert torch.equal(other.query_x, b.query_x[2:4])


def test_seeds_and_indices_differ():
    t0 = sinusoid(seed=0).sample(5)
    t1 = sinusoid(seed=1).sample(5)
    assert not torch.equal(t0.support_x, t1.support_x)
    b = sinusoid(shots=5, queries=10, seed=0).sample_batch(0, 3)
    # neighbouring tasks are not shifted copies of each other's random streams
    flat = [
        torch.cat([b.amplitude[i : i + 1], b.phase[i : i + 1], b.support_x[i].flatten()])
        for i in range(3)
    ]
    for i in range(2):
        assert not np.isin(flat[i + 1].numpy(), flat[i].numpy()).any()


def test_large_index_and_seed():
    t = sinusoid(seed=2**64 - 1).sample(2**64 - 1)
    assert t.support_x.shape == (5, 1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"shots": 0}, ValueError, "shots"),
        ({"queries": 0}, ValueError, "queries"),
        ({"shots": 2.5}, TypeError, "shots"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": True}, TypeError, "seed"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        sinusoid(**kwargs)


def test_bad_indices():
    tasks = sinusoid()
    with pytest.raises(ValueError, match="i: must be"):
        tasks.sample(-1)
    with pytest.raises(TypeError, match="start"):
        tasks.sample_batch(0.5, 2)
    with pytest.raises(ValueError, match="count"):
        tasks.sample_batch(0, -1)
    assert tasks.sample_batch(0, 0).support_x.shape == (0, 5, 1)


def test_sizes_beyond_memory_are_refused_before_allocating():
    # used to be NumPy MemoryErrors or "Maximum allowed dimension exceeded"
    tasks = sinusoid()
    for count in (2**40, 2**63):
        with pytest.raises(ValueError, match="^count: .* tasks of 5 \\+ 10 points would take"):
            tasks.sample_batch(0, count)
    with pytest.raises(ValueError, match="^shots, queries: one task of"):
        sinusoid(shots=2**62)
    with pytest.raises(ValueError, match="^shots, queries: one task of"):
        SinusoidTasks(shots=1, queries=2**62)
