"""tieredImageNet (Ren et al., 2018) from the pickles its authors distribute: 608 ImageNet
classes grouped in 34 categories, split by category into 351 training, 97 validation and
160 test classes (20, 6 and 8 categories).

Each split is two files, found in ``root`` or ``root/tiered-imagenet``:

``<split>_images_png.pkl``
    a pickled list with one PNG-encoded image per entry (numpy uint8 buffers, ``bytes`` or
    Python 2 strings), 84 x 84 RGB;
``<split>_labels.pkl``
    a pickled dict: ``label_specific`` (the class of each image, an index into
    ``label_specific_str``), ``label_general`` (its category, an index into
    ``label_general_str``) and the two lists of names.

The split is the one of the files; class names are ``label_specific_str`` in the file's
order. The hierarchy is kept: ``metadata["general_names"]`` lists the categories and
``metadata["class_general"][c]`` is the category of class ``c`` (a class belongs to one
category; a file that says otherwise is refused). Images are decoded on a thread pool and
resized with area averaging (PIL ``Image.BOX``) when ``image_size`` is not 84.

The class lists of Ren et al. ship with the package
(``metarobust/data/splits/tiered_imagenet/``, ImageNet wnids);
``metadata["published_split"]`` says whether the classes read are exactly those of the split
asked for (False too for files that name their classes otherwise than by wnid).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._checks import check_bool, check_int
from ._benchmark import (
    as_root,
    check_split,
    first_existing,
    int_labels,
    key,
    load_pickle,
    shipped_classes,
    text,
)
from .dataset import ImageDataset
from .image_folder import check_size, decode_images

__all__ = ["tiered_imagenet"]


def _find(root: Path, name: str) -> Path:
    path = first_existing([root / name, root / "tiered-imagenet" / name])
    if path is None:
        raise FileNotFoundError(f"tiered_imagenet: {name} is neither in {root} nor in "
                                f"{root / 'tiered-imagenet'}")
    return path


def _names(value: Any, file: Path, name: str) -> list[str]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | np.ndarray):
        raise ValueError(f"{file}: {name!r} must be a list of names, found "
                         f"{type(value).__name__}")
    try:
        names = [text(v) for v in value]
    except TypeError as exc:
        raise ValueError(f"{file}: {name!r} must be a list of names: {exc}") from None
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{file}: {name!r} must list distinct names, found {len(names)} "
                         f"names, {len(set(names))} distinct")
    return names


def _labels(path: Path) -> tuple[np.ndarray, list[str], list[str], list[int]]:
    """(class of each image, class names, category names, category of each class)."""
    obj = load_pickle(path, "tiered_imagenet labels file")
    specific_str = _names(key(obj, "label_specific_str", path), path, "label_specific_str")
    general_str = _names(key(obj, "label_general_str", path), path, "label_general_str")
    specific = int_labels(key(obj, "label_specific", path), None, path, "label_specific")
    general = int_labels(key(obj, "label_general", path), specific.size, path, "label_general")
    for arr, names, what in ((specific, specific_str, "label_specific"),
                             (general, general_str, "label_general")):
        if arr.size and int(arr.max()) >= len(names):
            raise ValueError(f"{path}: {what} holds label {int(arr.max())}, out of range for "
                             f"the {len(names)} names of {what}_str")
    class_general = [-1] * len(specific_str)
    for s, g in np.unique(np.stack([specific, general], axis=1), axis=0).tolist():
        if class_general[s] != -1:
            raise ValueError(f"{path}: class {specific_str[s]!r} has images in two categories "
                             f"({general_str[class_general[s]]!r}, {general_str[g]!r})")
        class_general[s] = g
    empty = [specific_str[c] for c, g in enumerate(class_general) if g == -1]
    if empty:
        raise ValueError(f"{path}: {len(empty)} class(es) of label_specific_str have no "
                         f"images: {empty[:5]}")
    return specific, specific_str, general_str, class_general


def _encoded(value: Any, i: int, file: Path) -> bytes:
    """One entry's PNG bytes; a numpy buffer is passed as a view (no copy: the training
    split's list is gigabytes)."""
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return cast(bytes, np.ascontiguousarray(value).reshape(-1).data)
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # a Python 2 string read as latin1
        return value.encode("latin1")
    raise ValueError(f"{file}: entry {i} is {type(value).__name__}, not PNG bytes")


def tiered_imagenet(
    root: str | os.PathLike[str],
    split: str = "train",
    image_size: int = 84,
    progress: bool = True,
    workers: int | None = None,
) -> ImageDataset:
    """Load one split of tieredImageNet from ``<split>_images_png.pkl`` and
    ``<split>_labels.pkl``.

    Args:
        root: the folder holding the pickles (or their ``tiered-imagenet`` folder).
        split: ``"train"`` (351 classes), ``"val"`` (97) or ``"test"`` (160).
        image_size: output side length (84 keeps the stored pixels).
        progress: show a tqdm progress bar while decoding.
        workers: decoder threads (default: CPU count, at most 4).

    Returns:
        ImageDataset with RGB images ``(N, 3, S, S)`` uint8, grouped by class, with the
        category of each class in ``metadata``.

    Raises:
        FileNotFoundError: ``root`` or one of the two files does not exist.
        ValueError: a bad argument, a damaged pickle, wrong keys, lengths that disagree,
            labels out of range or an image that cannot be decoded (the message names it).
    """
    split = check_split(split, "tiered_imagenet")
    size = check_size(image_size)
    progress = check_bool(progress, "progress")
    workers = None if workers is None else check_int(workers, "workers", 1)
    root_p = as_root(root, "tiered_imagenet")
    images_path = _find(root_p, f"{split}_images_png.pkl")
    labels_path = _find(root_p, f"{split}_labels.pkl")
    specific, class_names, general_names, class_general = _labels(labels_path)
    encoded = load_pickle(images_path, "tiered_imagenet images file")
    if not isinstance(encoded, list | tuple):
        raise ValueError(f"{images_path}: expected a pickled list of PNG images, found "
                         f"{type(encoded).__name__}")
    if len(encoded) != specific.size:
        raise ValueError(f"{images_path} holds {len(encoded)} images but {labels_path} "
                         f"labels {specific.size}")
    order = np.argsort(specific, kind="stable")
    items = [(f"{images_path.name}[{int(i)}]", _encoded(encoded[int(i)], int(i), images_path))
             for i in order]
    del encoded
    pixels = decode_images(items, size, "RGB", progress, f"tiered_imagenet {split}", workers)
    metadata = {
        "source": "tiered_imagenet",
        "root": str(root_p),
        "split": split,
        "image_size": size,
        "general_names": general_names,
        "class_general": class_general,
        "published_split": sorted(class_names) == sorted(shipped_classes("tiered_imagenet",
                                                                         split)),
    }
    return ImageDataset(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), specific[order],
                        class_names, metadata)
