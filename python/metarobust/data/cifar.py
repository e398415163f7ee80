"""CIFAR-FS (Bertinetto et al., 2019) and FC100 (Oreshkin et al., 2018), both built from
the 100 classes of CIFAR-100 (600 images of 32 x 32 each, train and test files together).

``root`` is the folder ``cifar-100-python`` of the official Python archive
(``cifar-100-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html) or the
folder holding it. Its pickles ``train``, ``test`` (``data`` uint8 ``(N, 3072)`` in
channel-first order, ``fine_labels``, ``coarse_labels``) and ``meta``
(``fine_label_names``, ``coarse_label_names``) are Python 2 pickles; their keys are read
whether they come back as ``str`` or ``bytes``.

The class splits ship with the package (``metarobust/data/splits/``):

- CIFAR-FS: 64 / 16 / 20 classes (``cifar_fs/<split>.txt``, one fine class per line, the
  lists of the R2-D2 repository of Bertinetto et al.);
- FC100: 12 / 4 / 4 superclasses = 60 / 20 / 20 classes (``fc100/<split>.txt``, one
  ``superclass/class`` line per fine class, the split of the TADAM supplementary material);
  each image's coarse label is checked against the superclass listed.

Classes come in the order of the split file; a class's images are its ``train`` images then
its ``test`` images, in file order. ``metadata["class_superclass"]`` holds each class's
CIFAR-100 superclass. Other sizes than 32 are resized with area averaging
(PIL ``Image.BOX``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._benchmark import (
    as_root,
    check_split,
    int_labels,
    key,
    load_pickle,
    resize_images,
    shipped_classes,
    text,
)
from .dataset import ImageDataset
from .image_folder import check_size

__all__ = ["cifar_fs", "fc100"]


def _folder(root: Path, reader: str) -> Path:
    for folder in (root, root / "cifar-100-python"):
        if (folder / "meta").is_file() or (folder / "train").is_file():
            return folder
    raise FileNotFoundError(f"{reader}: neither {root} nor {root / 'cifar-100-python'} holds "
                            "the CIFAR-100 files meta, train and test")


def _names(folder: Path, field: str, count: int) -> list[str]:
    meta_path = folder / "meta"
    value = key(load_pickle(meta_path, "CIFAR-100 meta file"), field, meta_path)
    try:
        names = [text(v) for v in value]
    except TypeError as exc:
        raise ValueError(f"{meta_path}: {field!r} must be a list of names: {exc}") from None
    if len(names) != count or len(set(names)) != count:
        raise ValueError(f"{meta_path}: {field!r} must hold {count} distinct names, found "
                         f"{len(names)} ({len(set(names))} distinct)")
    return names


def _part(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = folder / part
    obj = load_pickle(path, f"CIFAR-100 {part} file")
    data = key(obj, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        what = (f"dtype {data.dtype}, shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise ValueError(f"{path}: 'data' must be uint8 rows of 3072 pixels, found {what}")
    n = data.shape[0]
    fine = int_labels(key(obj, "fine_labels", path), n, path, "fine_labels")
    coarse = int_labels(key(obj, "coarse_labels", path), n, path, "coarse_labels")
    for arr, high, what in ((fine, 100, "fine_labels"), (coarse, 20, "coarse_labels")):
        if arr.size and int(arr.max()) >= high:
            raise ValueError(f"{path}: {what} holds label {int(arr.max())}, out of range "
                             f"0..{high - 1}")
    return data.reshape(n, 3, 32, 32), fine, coarse


def _read(root: str | os.PathLike[str], split: str, image_size: int, reader: str
          ) -> ImageDataset:
    split = check_split(split, reader)
    size = check_size(image_size)
    folder = _folder(as_root(root, reader), reader)
    fine_names = _names(folder, "fine_label_names", 100)
    coarse_names = _names(folder, "coarse_label_names", 20)
    parts = [_part(folder, "train"), _part(folder, "test")]
    images = np.concatenate([p[0] for p in parts])
    fine = np.concatenate([p[1] for p in parts])
    coarse = np.concatenate([p[2] for p in parts])
    listed = shipped_classes(reader, split)
    wanted = [line.rsplit("/", 1)[-1] for line in listed]
    missing = sorted(set(wanted) - set(fine_names))
    if missing:
        raise ValueError(f"{folder / 'meta'}: fine_label_names lacks the {reader} classes "
                         f"{missing[:5]}")
    groups, superclass = [], []
    for line, name in zip(listed, wanted):
        idx = np.flatnonzero(fine == fine_names.index(name))
        if idx.size == 0:
            raise ValueError(f"{folder}: the {reader} class {name!r} has no images in train "
                             "or test")
        sup = sorted({coarse_names[int(k)] for k in np.unique(coarse[idx])})
        if len(sup) != 1 or ("/" in line and sup[0] != line.rsplit("/", 1)[0]):
            raise ValueError(f"{folder}: the images of class {name!r} have coarse labels {sup}"
                             + (f", expected {line.rsplit('/', 1)[0]!r}" if "/" in line else ""))
        groups.append(idx)
        superclass.append(sup[0])
    keep = np.concatenate(groups)
    labels = np.repeat(np.arange(len(groups), dtype=np.int64), [g.size for g in groups])
    chosen = images[keep]
    out = chosen if size == 32 else resize_images(chosen.transpose(0, 2, 3, 1), size)
    metadata = {"source": reader, "root": str(folder), "split": split, "image_size": size,
                "class_superclass": superclass}
    return ImageDataset(np.ascontiguousarray(out), labels, wanted, metadata)


def cifar_fs(root: str | os.PathLike[str], split: str = "train", image_size: int = 32
             ) -> ImageDataset:
    """Load one split of CIFAR-FS (64 / 16 / 20 classes) from the CIFAR-100 pickles.

    Args:
        root: ``cifar-100-python`` or the folder holding it.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: output side length (32 keeps the stored pixels).

    Returns:
        ImageDataset with RGB images ``(N, 3, S, S)`` uint8, grouped by class.

    Raises:
        FileNotFoundError: ``root`` or a CIFAR-100 file does not exist.
        ValueError: a bad argument, or a damaged file, wrong keys, lengths that disagree or
            labels out of range (the message names the file).
    """
    return _read(root, split, image_size, "cifar_fs")


def fc100(root: str | os.PathLike[str], split: str = "train", image_size: int = 32
          ) -> ImageDataset:
    """Load one split of FC100 (12 / 4 / 4 superclasses, 60 / 20 / 20 classes) from the
    CIFAR-100 pickles; arguments, result and errors as :func:`cifar_fs`."""
    return _read(root, split, image_size, "fc100")
