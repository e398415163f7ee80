"""collate_episodes: a DataLoader over an EpisodeDataset batches like sample_batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

import metarobust as mr
from metarobust.episodes import EpisodeDataset


def _sampler(dtype="float32"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 1, 6, 6), dtype=np.uint8)
    labels = np.repeat(np.arange(12), 5)
    return mr.EpisodeSampler((images, labels), ways=3, shots=2, queries=2, seed=5, dtype=dtype)


def _same(a: mr.Episode, b: mr.Episode) -> None:
    for f in dataclasses.fields(mr.Episode):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and x.shape == y.shape, f.name
        assert torch.equal(x, y), f.name


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_a_dataloader_with_batch_size_gives_the_sampler_batches(dtype):
    sampler = _sampler(dtype)
    loader = DataLoader(EpisodeDataset(sampler, 10), batch_size=4,
                        collate_fn=mr.collate_episodes)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 2]
    for k, b in enumerate(batches):
        _same(b, sampler.sample_batch(4 * k, len(b)))


def test_default_collate_of_episodes_is_what_collate_episodes_fixes():
    # the default collate function does not know Episodes (the observed failure)
    sampler = _sampler()
    with pytest.raises(TypeError):
        default_collate([sampler.sample(0), sampler.sample(1)])
    assert isinstance(mr.collate_episodes([sampler.sample(0)]), mr.Episode)


def test_collate_refuses_what_it_cannot_stack():
    sampler = _sampler()
    ep = sampler.sample(0)
    with pytest.raises(ValueError, match="episodes: the list is empty"):
        mr.collate_episodes([])
    with pytest.raises(TypeError, match=r"episodes\[1\]: expected an Episode"):
        mr.collate_episodes([ep, "x"])
    with pytest.raises(TypeError, match="episodes: expected a list"):
        mr.collate_episodes(ep)
    with pytest.raises(ValueError, match=r"episodes\[0\]: a batch"):
        mr.collate_episodes([sampler.sample_batch(0, 2)])
    other = mr.EpisodeSampler((np.zeros((60, 1, 6, 6), np.uint8), np.repeat(np.arange(12), 5)),
                              ways=3, shots=1, queries=2, seed=5)
    with pytest.raises(ValueError, match=r"episodes\[1\]\.support_x"):
        mr.collate_episodes([ep, other.sample(0)])
