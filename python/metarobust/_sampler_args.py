"""The argument checks of :class:`metarobust.episodes.EpisodeSampler`: the dataset arrays
(images or feature vectors, their layout), the class list, the normalisation, pinned
memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._checks import check_bool, check_real
from .data.arrays import check_layout, to_nchw, to_numpy

__all__ = ["as_arrays", "check_classes", "check_feature_options", "check_scale",
           "image_arrays", "listify", "pin_memory"]


def as_arrays(data: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    if labels is not None:
        if isinstance(data, tuple) or hasattr(data, "labels"):
            raise TypeError(f"labels: the dataset ({type(data).__name__}) holds its labels; "
                            f"pass labels only with an images array, got {type(labels).__name__}")
    if labels is None:
        if isinstance(data, tuple) and len(data) == 2:
            data, labels = data
        elif hasattr(data, "images") and hasattr(data, "labels"):
            data, labels = data.images, data.labels
        else:
            raise TypeError(
                "dataset: expected an ImageDataset, an (images, labels) tuple, or images with "
                f"labels=..., got {type(data).__name__}"
            )
    return to_numpy(data), to_numpy(labels)


def _check_arrays(images: Any, labels: Any, labels_apart: bool) -> None:
    """The dataset's arrays as the core takes them, errors naming the argument that carried
    them: ``dataset``, or ``labels`` when the labels were given apart (``labels_apart``).
    Images are uint8 ``(N, C, H, W)``; float32 ``(N, D)`` arrays are feature vectors."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"dataset: images or features: expected a numpy array (N, C, H, W) or "
                        f"(N, D), got {type(images).__name__}")
    if images.ndim == 2 and images.dtype != np.float32:
        raise TypeError(f"dataset: features: (N, D) feature vectors must have dtype float32, "
                        f"got {images.dtype} (convert with .astype(np.float32))")
    if images.dtype == np.float32 and images.ndim not in (2, 4):
        raise ValueError(f"dataset: features: float32 arrays are taken as (N, D) feature "
                         f"vectors, got shape {images.shape}")
    if images.ndim not in (2, 4) and images.dtype.kind not in "uif":
        raise TypeError(f"dataset: images or features: expected uint8 (N, C, H, W) images or "
                        f"float32 (N, D) features, got dtype {images.dtype}, shape "
                        f"{images.shape}")
    if images.ndim != 2 and images.dtype != np.uint8:
        raise TypeError(f"dataset: images: expected dtype uint8, got {images.dtype} (float "
                        "images in [0, 1]: convert with metarobust.data.from_arrays; float32 "
                        "(N, D) arrays are taken as feature vectors)")
    if images.ndim not in (2, 4):
        raise ValueError(f"dataset: images: expected 4 dimensions (N, C, H, W), or features "
                         f"(N, D), got shape {images.shape}")
    name = "labels" if labels_apart else "dataset: labels"
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(labels).__name__}")
    if labels.dtype != np.int64:
        raise TypeError(f"{name}: expected dtype int64, got {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{name}: expected 1 dimension (N,), got shape {labels.shape}")


def image_arrays(dataset: Any, labels: Any, layout: str | None) -> tuple[np.ndarray,
                                                                         np.ndarray]:
    """The sampler's ``(images, labels)``: checked, images in NCHW (``layout``)."""
    labels_apart = labels is not None
    images, labels = as_arrays(dataset, labels)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = to_nchw(images, layout, "dataset: images")
    elif layout is not None:
        check_layout(layout)
        if isinstance(images, np.ndarray) and images.ndim == 2:
            raise ValueError(f"layout: {layout!r} describes images; the dataset holds (N, D) "
                             "feature vectors")
    _check_arrays(images, labels, labels_apart)
    return images, labels


def check_feature_options(**options: Any) -> None:
    """Image-only options are refused for feature vectors: ``options`` maps each option's
    name to whether it was set."""
    for name, is_set in options.items():
        if is_set:
            raise ValueError(f"{name}: an image option; the dataset holds (N, D) feature "
                             "vectors, which are returned as they are (float32, no "
                             "corruption, normalisation or augmentation)")


def check_classes(classes: Any) -> np.ndarray | None:
    if classes is None:
        return None
    try:
        arr = np.asarray(classes)
    except ValueError:  # ragged nesting
        raise ValueError(f"classes: expected a 1-D list of class labels, got {classes!r}"
                         ) from None
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # np.asarray([]) is float64
    if arr.dtype.kind not in "iu":
        raise TypeError(f"classes: expected integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"classes: expected a 1-D list of class labels, got shape {arr.shape}")
    if arr.size and arr.dtype.kind == "u" and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"classes: class {int(arr.max())} is not a label of the dataset")
    return np.ascontiguousarray(arr, dtype=np.int64)


def pin_memory(pin_memory: Any) -> bool:
    pin = check_bool(pin_memory, "pin_memory")
    if pin and not torch.cuda.is_available():
        raise ValueError("pin_memory: page-locked memory needs a CUDA device, and torch sees "
                         "none (pass pin_memory=False)")
    return pin



def listify(value: Any, name: str) -> list[float] | None:
    """One value or one per channel, as floats (None stays None)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.ndim > 1:
        raise ValueError(f"{name}: expected one value or one per channel, got shape "
                         f"{value.shape}")
    if isinstance(value, np.ndarray):
        values = list(value.reshape(-1))
    else:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{name}: needs at least one value")
    return [check_real(v, name) for v in values]


def check_scale(mean: list[float] | None, std: list[float] | None) -> None:
    """``(x - mean) / std`` of pixels in [0, 1] must be finite in float32: a tiny ``std``
    would turn every image into infinities."""
    top = float(np.finfo(np.float32).max)
    for m in mean or [0.0]:
        for s in std or [1.0]:
            if s > 0 and max(abs(m), abs(1 - m)) / s > top:
                raise ValueError(f"std: {s!r} scales [0, 1] pixels (mean {m!r}) beyond the "
                                 "float32 range")
