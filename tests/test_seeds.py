"""metarobust.seeds: the streams are pinned, independent and range-checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarobust import seeds

TAGS = {name: getattr(seeds, name) for name in ("VALIDATION", "ADVERSARIAL_TRAINING", "AUGMENT",
                                                "LABEL_NOISE", "GAUSSIAN_NOISE", "PGD_START",
                                                "CERTIFY", "NOISE_TRAINING")}


def test_derive_is_numpy_seed_sequence_of_the_whole_tuple():
    # the scheme itself: SeedSequence over (seed, tag, *parts), its first 64-bit word
    for seed, parts in ((0, ()), (7, (3,)), (2**64 - 1, (1, 2**63))):
        want = np.random.SeedSequence([seed, seeds.PGD_START, *parts]).generate_state(
            1, np.uint64)[0]
        assert seeds.derive(seed, seeds.PGD_START, *parts) == int(want)


def test_pinned_values():
    # changing any of these changes every result that depends on the stream
    assert seeds.derive(0, seeds.VALIDATION) == 13833434025688655629
    assert seeds.derive(1234, seeds.PGD_START, 50) == 14332879438574505478
    assert seeds.numpy_rng(5, seeds.AUGMENT, 9).integers(0, 2**31, 3).tolist() == \
        [135030060, 368259571, 69792265]
    g = seeds.torch_generator(1234, seeds.GAUSSIAN_NOISE, 1, 0)
    assert torch.randn(2, generator=g).tolist() == pytest.approx([0.50684, 0.98811], abs=1e-5)


def test_tags_are_distinct_and_streams_independent():
    assert len(set(TAGS.values())) == len(TAGS)
    values = {seeds.derive(42, tag, 0) for tag in TAGS.values()}
    assert len(values) == len(TAGS)
    # nearby seeds and positions give unrelated streams, not shifted copies
    a = seeds.numpy_rng(1, seeds.LABEL_NOISE, 0).random(1000)
    b = seeds.numpy_rng(2, seeds.LABEL_NOISE, 0).random(1000)
    c = seeds.numpy_rng(1, seeds.LABEL_NOISE, 1).random(1000)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1 and abs(np.corrcoef(a, c)[0, 1]) < 0.1
    assert not np.isin(a, b).any()


def test_the_label_noise_and_augment_streams_are_the_published_ones():
    # the streams label noise and augmentation used before the seeds module existed
    legacy = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([9, 0x4C4E, 2, 17])))
    assert np.array_equal(seeds.numpy_rng(9, seeds.LABEL_NOISE, 2, 17).random(5),
                          legacy.random(5))
    assert np.array_equal(seeds.numpy_rng(3, seeds.AUGMENT, 4).random(5),
                          np.random.default_rng([3, 0x4147, 4]).random(5))


@pytest.mark.parametrize("args", [(-1, seeds.VALIDATION), (0, seeds.VALIDATION, -2),
                                  (1.5, seeds.VALIDATION), (True, seeds.VALIDATION),
                                  (0, seeds.VALIDATION, "x")])
def test_bad_seeds_are_named(args):
    with pytest.raises(ValueError, match="seed streams take non-negative ints"):
        seeds.derive(*args)


@pytest.mark.parametrize("args, name", [((None, seeds.VALIDATION), "seed"),
                                        ((0, -3), "stream"),
                                        ((0, seeds.VALIDATION, 1, 2.5), "parts\\[1\\]")])
def test_the_bad_value_is_named(args, name):
    # the message used to list every value without saying which one was wrong
    with pytest.raises(ValueError, match=f"^{name}: seed streams take non-negative ints"):
        seeds.derive(*args)
    with pytest.raises(ValueError, match=f"^{name}: "):
        seeds.numpy_rng(*args)
