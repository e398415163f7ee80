"""Datasets from a map-style torch ``Dataset`` of ``(image, label)`` items, as torchvision
datasets give them: PIL images (any mode: converted to ``"L"`` or ``"RGB"``), or tensors /
numpy arrays ``(C, H, W)`` (``uint8``, or floats in ``[0, 1]``, converted as
:mod:`metarobust.data.arrays` says) or ``(H, W)``.

Items are read on a thread pool (PIL decodes without the GIL) with a tqdm progress bar, and
written into one ``uint8`` array, optionally saved straight into a cache directory
(:meth:`ImageDataset.save`, atomic) and returned memory-mapped from there.

>>> import torch, metarobust as mr
>>> class Tiny(torch.utils.data.Dataset):
...     def __len__(self): return 6
...     def __getitem__(self, i): return torch.full((3, 8, 8), i / 10), i % 3
>>> mr.data.from_torch(Tiny(), progress=False).image_shape
(3, 8, 8)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._checks import check_bool, check_int, check_path
from .arrays import to_numpy, to_uint8
from .dataset import ImageDataset, load
from .image_folder import _run_chunks, default_workers

__all__ = ["from_torch"]

_CHUNK = 64


def _as_chw(item: Any, index: int, size: int | None, mode: str | None) -> np.ndarray:
    """Item ``index``'s image as uint8 ``(C, H, W)``: PIL images converted to ``mode`` and
    resized (area averaging) to ``size``; arrays converted to uint8 (resized through PIL)."""
    from PIL import Image

    name = f"dataset[{index}]"
    if isinstance(item, Image.Image):
        im = item.convert(mode or ("L" if item.mode in ("1", "L", "I", "F", "I;16") else "RGB"))
    else:
        arr = to_numpy(item)
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{name}: the image must be a PIL image, a tensor or a numpy array, "
                            f"got {type(item).__name__}")
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"{name}: expected an image of shape (C, H, W) or (H, W), got "
                             f"shape {arr.shape}")
        arr = to_uint8(arr, name)
        if size is None or arr.shape[1:] == (size, size):
            return arr
        if arr.shape[0] not in (1, 3):
            raise ValueError(f"{name}: resizing takes 1 or 3 channels, got shape {arr.shape}")
        im = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BOX)
    out = np.asarray(im, dtype=np.uint8)
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def _label(value: Any, index: int) -> int:
    value = to_numpy(value)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise TypeError(f"dataset[{index}]: the label must be an int >= 0, got {value!r}")
    return int(value)


def _item(dataset: Any, index: int) -> tuple[Any, int]:
    item = dataset[index]
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise TypeError(f"dataset[{index}]: expected an (image, label) pair, got "
                        f"{type(item).__name__}")
    return item[0], _label(item[1], index)


def _class_names(dataset: Any, labels: np.ndarray) -> list[str] | None:
    names = getattr(dataset, "classes", None)
    if isinstance(names, list | tuple) and all(isinstance(n, str) for n in names) \
            and len(names) > int(labels.max(initial=-1)):
        return list(names)
    return None


def from_torch(
    dataset: Any,
    image_size: int | None = None,
    grayscale: bool | None = None,
    cache: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> ImageDataset:
    """An :class:`ImageDataset` with every item of a map-style torch ``Dataset``.

    Args:
        dataset: has ``len(dataset)`` and ``dataset[i] -> (image, label)``; images are PIL
            images or ``(C, H, W)`` / ``(H, W)`` tensors or arrays, labels ints >= 0.
        image_size: resize every image to ``image_size`` x ``image_size`` (area averaging);
            None keeps the sizes, which must then agree.
        grayscale: PIL images to one channel (True) or RGB (False); None: as the first
            item (``"L"`` and other one-band modes one channel, the rest RGB).
        cache: a directory to save the dataset to (atomically); the result is then read
            back from it, memory-mapped (``mr.data.load(cache)`` reads it again later).
        workers: reader threads (default: CPU count, at most 4).
        progress: show a tqdm progress bar.

    Class names are ``dataset.classes`` when it lists one string per label (torchvision's
    ``ImageFolder``, ``CIFAR10`` ...), else the labels as strings.
    """
    from tqdm.auto import tqdm

    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"dataset: expected a map-style Dataset (len() and [i]), got "
                        f"{type(dataset).__name__}")
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset: it is empty")
    size = None if image_size is None else check_int(image_size, "image_size", 1, 4096)
    mode = None if grayscale is None else ("L" if check_bool(grayscale, "grayscale") else "RGB")
    workers = default_workers() if workers is None else check_int(workers, "workers", 1)
    progress = check_bool(progress, "progress")
    cache_path = None if cache is None else check_path(cache, "cache")
    first_image, _ = _item(dataset, 0)
    first = _as_chw(first_image, 0, size, mode)
    if mode is None and first.shape[0] in (1, 3):
        mode = "L" if first.shape[0] == 1 else "RGB"
    images = np.empty((n, *first.shape), np.uint8)
    labels = np.empty(n, np.int64)

    def run(start: int, stop: int) -> int:
        for i in range(start, stop):
            image, labels[i] = _item(dataset, i)
            chw = _as_chw(image, i, size, mode)
            if chw.shape != first.shape:
                raise ValueError(f"dataset[{i}]: image of shape {chw.shape}, the first is "
                                 f"{first.shape}; pass image_size=... to resize them all")
            images[i] = chw
        return stop - start

    bounds = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    with tqdm(total=n, desc="from_torch", unit="img", disable=None if progress else True) as bar:
        if workers == 1:
            for s, e in bounds:
                bar.update(run(s, e))
        else:
            _run_chunks(run, bounds, workers, bar.update)
    meta = {"source": f"torch:{type(dataset).__name__}", "image_size": size}
    ds = ImageDataset(images, labels, _class_names(dataset, labels), meta)
    if cache_path is None:
        return ds
    ds.save(cache_path)
    return load(cache_path)
