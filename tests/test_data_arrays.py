"""from_arrays and the layout check: numpy and torch input, uint8 kept, floats in [0, 1]
converted by the documented rule (checked against NumPy), NHWC transposed, NHWC-looking
arrays refused without layout=, bad input named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import metarobust as mr
from metarobust.data.arrays import to_uint8


def test_uint8_nchw_is_kept_and_torch_tensors_are_taken():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 3, 5, 5), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    ds = mr.data.from_arrays(x, y, class_names=["a", "b", "c"])
    np.testing.assert_array_equal(ds.images, x)
    assert ds.labels.dtype == np.int64 and ds.class_names == ["a", "b", "c"]
    assert ds.metadata["source"] == "arrays"
    dt = mr.data.from_arrays(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_array_equal(dt.images, x)
    np.testing.assert_array_equal(dt.labels, y)


def test_every_byte_over_255_comes_back_exactly():
    """ToTensor's k / 255 (float32) is converted back to k for every byte k."""
    k = np.arange(256, dtype=np.uint8).reshape(4, 1, 8, 8)
    for dtype in (np.float32, np.float64, np.float16):
        x = (k.astype(np.float32) / 255).astype(dtype)
        if dtype == np.float16:  # float16 has too few bits for some k / 255: rint is exact
            np.testing.assert_array_equal(to_uint8(x),
                                          np.rint(x.astype(np.float64) * 255).astype(np.uint8))
            continue
        np.testing.assert_array_equal(mr.data.from_arrays(x, [0, 1, 2, 3]).images, k)


def test_ties_round_half_to_even():
    # (k + 0.5) / 255 in float64: x * 255 is k + 0.5 up to rounding; compare with NumPy
    x = (np.arange(255) + 0.5) / 255
    got = to_uint8(x.reshape(-1, 1, 1, 1)).ravel()
    np.testing.assert_array_equal(got, np.rint(x * 255).astype(np.uint8))
    assert to_uint8(np.array([0.5])).tolist() == [128]  # 127.5 -> 128 (even)
    assert to_uint8(np.array([1.5 / 255])).tolist() == [2]  # 1.5 -> 2 (even)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=4, max_dims=4, max_side=5),
                  elements=st.floats(0, 1, width=32)))
def test_float_conversion_matches_numpy(x):
    ds = mr.data.from_arrays(x, np.zeros(x.shape[0], np.int64), layout="NCHW")
    np.testing.assert_array_equal(ds.images, np.rint(x.astype(np.float64) * 255).astype(np.uint8))


def test_nhwc_is_transposed_once_and_grayscale_3d_gets_a_channel():
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    ds = mr.data.from_arrays(hwc, [0, 1, 0, 1], layout="NHWC")
    np.testing.assert_array_equal(ds.images, np.transpose(hwc, (0, 3, 1, 2)))
    assert ds.images.flags.c_contiguous
    gray = rng.integers(0, 256, (4, 9, 7), dtype=np.uint8)
    np.testing.assert_array_equal(mr.data.from_arrays(gray, [0, 1, 0, 1]).images, gray[:, None])


def test_an_nhwc_array_without_layout_is_refused_naming_layout():
    """Observed problem: (N, 32, 32, 3) was taken as 32 channels of 32x3 images."""
    hwc = np.zeros((4, 32, 32, 3), np.uint8)
    for call in (lambda: mr.data.from_arrays(hwc, [0, 1, 0, 1]),
                 lambda: mr.EpisodeSampler(hwc, np.array([0, 1, 0, 1]), ways=2, shots=1,
                                           queries=1)):
        with pytest.raises(ValueError, match=r"looks like \(N, H, W, C\).*layout='NHWC'"):
            call()
    # the sampler transposes with layout="NHWC", once, and samples NCHW
    s = mr.EpisodeSampler(hwc + np.arange(4, dtype=np.uint8)[:, None, None, None],
                          np.array([0, 1, 0, 1]), ways=2, shots=1, queries=1, layout="NHWC",
                          dtype="uint8")
    assert s.image_shape == (3, 32, 32) and s.sample(0).support_x.shape == (2, 3, 32, 32)
    # layout="NCHW" takes the array as it says
    assert mr.data.from_arrays(hwc, [0, 1, 0, 1], layout="NCHW").image_shape == (32, 32, 3)


@pytest.mark.parametrize("images, kw, error, match", [
    (np.zeros((2, 1, 4, 4), np.int16), {}, TypeError, "images: expected dtype uint8, or floats"),
    (np.zeros((2, 1, 4, 4), bool), {}, TypeError, "got bool"),
    (np.full((2, 1, 4, 4), 1.5), {}, ValueError, r"must lie in \[0, 1\].*1.5"),
    (np.full((2, 1, 4, 4), -0.1), {}, ValueError, r"in \[0, 1\]"),
    (np.full((2, 1, 4, 4), np.nan), {}, ValueError, "must be finite; item"),
    (np.zeros((2, 4)), {}, ValueError, r"images: expected \(N, C, H, W\)"),
    ([[0]], {}, TypeError, "images: expected a numpy array or a torch tensor, got list"),
    (np.zeros((2, 1, 4, 4), np.uint8), dict(layout="HWC"), ValueError, "layout: expected"),
    (np.zeros((2, 4, 4), np.uint8), dict(layout="NHWC"), ValueError, r"layout: 'NHWC'"),
])
def test_bad_input_is_named(images, kw, error, match):
    with pytest.raises(error, match=match):
        mr.data.from_arrays(images, [0, 1], **kw)


def test_bad_labels_are_named():
    x = np.zeros((2, 1, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="disagree on N"):
        mr.data.from_arrays(x, [0, 1, 2])
    with pytest.raises(TypeError, match="labels must be integers"):
        mr.data.from_arrays(x, torch.tensor([0.0, 1.0]))
