"""miniImageNet (Vinyals et al., 2016) with the class split of Ravi & Larochelle (2017):
64 training, 16 validation and 20 test classes of 600 images each.

``root`` is searched for the split's files in one of the three forms the benchmark is
distributed in (the first found wins):

``mini-imagenet-cache-<split>.pkl``
    a pickled dict: ``image_data`` uint8 ``(N, 84, 84, 3)`` and ``class_dict``
    ``{wnid: [image indices]}`` (the cache of learn2learn and of many repositories;
    ``mini-imagenet-cache-validation.pkl`` is found for ``"val"`` too);
``miniImageNet_category_split_<train_phase_train|val|test>.pickle``
    the pickles of Gidaris & Komodakis used by MetaOptNet (Python 2, latin1): ``data``
    uint8 ``(N, 84, 84, 3)``, ``labels`` (one int per image) and, when present,
    ``catname2label`` ``{wnid: label}`` for the class names;
``<split>.csv``
    the Ravi & Larochelle CSV (``filename,label``) over the image folder (``images/``
    below ``root``), read by :func:`metarobust.data.image_folder`.

Classes are sorted by name (wnid); images keep their order in the file. Pickled images are
RGB; other sizes than the stored one are resized with area averaging (PIL ``Image.BOX``),
like the folder readers. The split lists of Ravi & Larochelle ship with the package
(``metarobust/data/splits/mini_imagenet/``); ``metadata["published_split"]`` says whether
the classes read are exactly those of the split asked for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_bool, check_int
from ._benchmark import (
    as_root,
    check_split,
    hwc_images,
    int_labels,
    key,
    load_pickle,
    resize_images,
    shipped_classes,
    text,
)
from .dataset import ImageDataset
from .image_folder import check_size, image_folder

__all__ = ["mini_imagenet"]

_METAOPTNET = {"train": "train_phase_train", "val": "val", "test": "test"}


def _candidates(root: Path, split: str) -> list[tuple[str, Path]]:
    caches = [root / f"mini-imagenet-cache-{split}.pkl"]
    if split == "val":  # learn2learn's name for it
        caches.append(root / "mini-imagenet-cache-validation.pkl")
    return [("cache_pkl", c) for c in caches] + [
        ("metaoptnet", root / f"miniImageNet_category_split_{_METAOPTNET[split]}.pickle"),
        ("csv", root / f"{split}.csv"),
    ]


def _from_cache(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    obj = load_pickle(path, "mini_imagenet file")
    images = hwc_images(key(obj, "image_data", path), path, "image_data")
    class_dict = key(obj, "class_dict", path)
    if not isinstance(class_dict, dict) or not class_dict:
        raise ValueError(f"{path}: 'class_dict' must be a non-empty dict {{wnid: [indices]}}")
    n = images.shape[0]
    by_name = {text(k): v for k, v in class_dict.items()}
    names = sorted(by_name)
    order, labels = [], []
    for c, name in enumerate(names):
        idx = int_labels(by_name[name], None, path, f"class_dict[{name!r}]")
        if idx.size and int(idx.max()) >= n:
            raise ValueError(f"{path}: class_dict[{name!r}] lists image {int(idx.max())}, "
                             f"but image_data holds {n} images")
        order.append(idx)
        labels.append(np.full(idx.size, c, dtype=np.int64))
    flat = np.concatenate(order)
    if flat.size != n or np.unique(flat).size != n:
        raise ValueError(f"{path}: class_dict must list every one of the {n} images exactly "
                         f"once; it lists {flat.size} indices, {np.unique(flat).size} distinct")
    return images[flat], np.concatenate(labels), names


def _from_metaoptnet(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    obj = load_pickle(path, "mini_imagenet file")
    images = hwc_images(key(obj, "data", path), path, "data")
    raw = int_labels(key(obj, "labels", path), images.shape[0], path, "labels")
    values, labels = np.unique(raw, return_inverse=True)
    names = [str(int(v)) for v in values]  # label order, unless the file names the classes
    cat = obj.get("catname2label", obj.get(b"catname2label"))
    if isinstance(cat, dict):
        by_label = {int(v): text(k) for k, v in cat.items()}
        if all(int(v) in by_label for v in values):
            names = [by_label[int(v)] for v in values]
            order = np.argsort(names, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            labels, names = rank[labels.reshape(-1)], sorted(names)
    keep = np.argsort(labels, kind="stable")
    return images[keep], labels[keep].astype(np.int64), names


def mini_imagenet(
    root: str | os.PathLike[str],
    split: str = "train",
    image_size: int = 84,
    progress: bool = True,
    workers: int | None = None,
) -> ImageDataset:
    """Load one split of miniImageNet from its pickles or its CSV and image folder.

    Args:
        root: the folder holding the split's file (see the module docstring).
        split: ``"train"`` (64 classes), ``"val"`` (16) or ``"test"`` (20).
        image_size: output side length (84 keeps the stored pixels).
        progress: show a progress bar while decoding an image folder.
        workers: decoder threads for an image folder (default: CPU count, at most 4).

    Returns:
        ImageDataset with RGB images ``(N, 3, S, S)`` uint8, grouped by class.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds none of the split's files.
        ValueError: a bad ``split``/``image_size``, or a damaged file (the message names it).
    """
    split = check_split(split, "mini_imagenet")
    size = check_size(image_size)
    progress = check_bool(progress, "progress")
    workers = None if workers is None else check_int(workers, "workers", 1)
    root_p = as_root(root, "mini_imagenet")
    found = [(kind, p) for kind, p in _candidates(root_p, split) if p.exists()]
    if not found:
        files = ", ".join(p.name for _, p in _candidates(root_p, split))
        raise FileNotFoundError(f"mini_imagenet: {root_p} holds none of the {split} split's "
                                f"files ({files})")
    kind, path = found[0]
    meta: dict[str, Any] = {"source": "mini_imagenet", "root": str(root_p), "split": split,
                            "file": path.name, "image_size": size}
    if kind == "csv":
        ds = image_folder(root_p, image_size=size, split_csv=path, progress=progress,
                          workers=workers)
        images, labels, names = ds.images, ds.labels, ds.class_names
    else:
        read = _from_cache if kind == "cache_pkl" else _from_metaoptnet
        hwc, labels, names = read(path)
        images = resize_images(hwc, size)
    meta["published_split"] = sorted(names) == sorted(shipped_classes("mini_imagenet", split))
    return ImageDataset(images, labels, names, meta)
