"""Datasets from arrays: numpy arrays or torch tensors of images in memory, and the layout
check that the episode sampler shares.

Layout: images are ``(N, C, H, W)`` (``layout="NCHW"``) or ``(N, H, W, C)``
(``layout="NHWC"``, transposed once to NCHW). Without ``layout``, an array whose last axis
is 1 or 3 while its second is not (and the last is smaller than the third: narrower than
tall, as no image is) looks NHWC and is refused with a ``ValueError`` that says to pass
``layout="NHWC"``; ``layout="NCHW"`` takes such an array as it is.

Pixel values: ``uint8`` images are kept as they are. Floating-point images must be finite
and in ``[0, 1]``; they are converted with ``uint8 = round_half_even(x * 255)``, computed
in float64 (``np.rint(x.astype(np.float64) * 255)``). So ``k / 255`` in float32 (what
``torchvision.transforms.ToTensor`` gives for the byte ``k``) comes back as ``k`` exactly.
Other dtypes (other integers, bool) are refused.

>>> import numpy as np, metarobust as mr
>>> hwc = np.zeros((6, 32, 32, 3), np.float32)
>>> mr.data.from_arrays(hwc, [0, 1, 2] * 2, layout="NHWC").image_shape
(3, 32, 32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .dataset import ImageDataset

__all__ = ["LAYOUTS", "from_arrays", "to_nchw", "to_numpy", "to_uint8"]

LAYOUTS = ("NCHW", "NHWC")


def to_numpy(value: Any) -> Any:
    """A torch tensor as a numpy array (detached, on the CPU); anything else unchanged."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def check_layout(layout: Any) -> str | None:
    """``layout`` checked: None, "NCHW" or "NHWC"."""
    if layout is not None and (not isinstance(layout, str) or layout not in LAYOUTS):
        raise ValueError(f"layout: expected 'NCHW' or 'NHWC' (or None: NCHW, refusing arrays "
                         f"that look NHWC), got {layout!r}")
    return layout


def to_nchw(images: np.ndarray, layout: str | None, name: str = "images") -> np.ndarray:
    """4-D ``images`` as NCHW: transposed (one copy) for ``layout="NHWC"``; refused when
    ``layout`` is None and the shape looks NHWC (see the module docstring)."""
    layout = check_layout(layout)
    shape = images.shape
    if layout == "NHWC":
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    if layout is None and shape[-1] in (1, 3) and shape[1] not in (1, 3) \
            and shape[-1] < shape[2]:
        raise ValueError(
            f"{name}: shape {shape} looks like (N, H, W, C) images with {shape[-1]} "
            f"channel(s), and (N, C, H, W) is expected: pass layout='NHWC' to have them "
            f"transposed (or layout='NCHW' if they really are {shape[1]} channels of "
            f"{shape[2]}x{shape[3]} pixels)")
    return images


def to_uint8(images: np.ndarray, name: str = "images") -> np.ndarray:
    """``uint8`` images unchanged; float images in [0, 1] as ``rint(x * 255)`` (float64,
    ties to even); anything else refused."""
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind != "f":
        raise TypeError(f"{name}: expected dtype uint8, or floats in [0, 1], got "
                        f"{images.dtype}")
    x = images.astype(np.float64)
    if x.size:
        bad = ~np.isfinite(x)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}: float images must be finite; item {where} is "
                             f"{images[where]}")
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            raise ValueError(f"{name}: float images must lie in [0, 1] (they are converted "
                             f"to uint8 as round(x * 255)), got values in [{low}, {high}]")
    return np.rint(x * 255).astype(np.uint8)


def from_arrays(
    images: Any,
    labels: Any,
    layout: str | None = None,
    class_names: Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> ImageDataset:
    """An :class:`ImageDataset` from images and labels in memory.

    Args:
        images: numpy array or torch tensor, ``(N, C, H, W)``, ``(N, H, W, C)`` with
            ``layout="NHWC"``, or ``(N, H, W)`` (one channel). ``uint8``, or floats in
            ``[0, 1]`` converted as the module docstring says.
        labels: ``(N,)`` integers >= 0 (numpy, torch or a list).
        layout: "NCHW", "NHWC", or None (NCHW, refusing a shape that looks NHWC).
        class_names: one string per class (default: the labels as strings).
        metadata: JSON-serialisable description (``source`` defaults to "arrays").

    >>> import numpy as np
    >>> ds = from_arrays(np.full((4, 1, 2, 2), 0.5), [0, 1, 1, 0])
    >>> int(ds.images[0, 0, 0, 0]), ds.num_classes
    (128, 2)
    """
    layout = check_layout(layout)
    images = to_numpy(images)
    labels = to_numpy(labels)
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images: expected a numpy array or a torch tensor, got "
                        f"{type(images).__name__}")
    if images.ndim == 3:
        if layout is not None:
            raise ValueError(f"layout: {layout!r} describes 4-D images; images of shape "
                             f"{images.shape} are (N, H, W), one channel")
        images = images[:, None]
    elif images.ndim != 4:
        raise ValueError(f"images: expected (N, C, H, W), (N, H, W, C) or (N, H, W), got "
                         f"shape {images.shape}")
    else:
        images = to_nchw(images, layout)
    images = np.ascontiguousarray(to_uint8(images))
    meta = {"source": "arrays", **(metadata or {})} if isinstance(metadata, dict | None) \
        else metadata
    return ImageDataset(images, labels, class_names, meta)
