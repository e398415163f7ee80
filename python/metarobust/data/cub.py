"""CUB-200-2011 (Wah et al., 2011), 200 bird species, with the few-shot class split of
Chen et al. ("A Closer Look at Few-shot Classification", ICLR 2019): 100 training,
50 validation and 50 test classes.

``root`` is the ``CUB_200_2011`` folder of the official archive (``CUB_200_2011.tgz``,
https://www.vision.caltech.edu/datasets/cub_200_2011/) or the folder holding it, with its
index files: ``classes.txt`` (``<class id> <name>``), ``images.txt``
(``<image id> <path under images/>``), ``image_class_labels.txt``
(``<image id> <class id>``) and, for ``crop=True``, ``bounding_boxes.txt``
(``<image id> <x> <y> <width> <height>`` in pixels).

The split is the rule of Chen et al.'s ``write_CUB_filelist.py``: the classes sorted by
name (``001.Black_footed_Albatross`` ...) are numbered from 0; class ``i`` is a training
class when ``i % 4`` is 0 or 2, a validation class when it is 1 and a test class when it is
3. With ``crop=True`` each image is first cut to its bounding box (``floor(x), floor(y),
ceil(x + width), ceil(y + height)``, clipped to the image). Images are converted to RGB and
resized to ``image_size`` with area averaging (PIL ``Image.BOX``); a class's images keep
the order of ``images.txt``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._checks import check_bool, check_int, check_nbytes
from ._benchmark import as_root, check_split
from .dataset import ImageDataset
from .image_folder import _run_chunks, check_size, decode_images, default_workers

__all__ = ["cub", "cub_split"]

_CHUNK = 64


def cub_split(index: int) -> str:
    """The split of the class at ``index`` (0-based, classes sorted by name), by the rule of
    Chen et al.: ``"train"`` for even indices, ``"val"`` for 1 mod 4, ``"test"`` for 3 mod 4.

    >>> [cub_split(i) for i in range(5)]
    ['train', 'val', 'train', 'test', 'train']
    """
    return "train" if index % 2 == 0 else ("val" if index % 4 == 1 else "test")


def _table(path: Path, fields: int) -> dict[int, list[str]]:
    """``{id: [other fields]}`` of an index file, each line ``<int id>`` and ``fields - 1``
    more fields (the last may hold spaces when ``fields`` is 2)."""
    if not path.is_file():
        raise FileNotFoundError(f"cub: {path} does not exist")
    rows: dict[int, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1) if fields == 2 else line.split()
        if len(parts) != fields:
            raise ValueError(f"cub: {path} line {number}: expected {fields} fields, got "
                             f"{line!r}")
        try:
            ident = int(parts[0])
        except ValueError:
            raise ValueError(f"cub: {path} line {number}: the id {parts[0]!r} is not an "
                             "integer") from None
        if ident in rows:
            raise ValueError(f"cub: {path} line {number}: id {ident} listed twice")
        rows[ident] = [p.strip() for p in parts[1:]]
    if not rows:
        raise ValueError(f"cub: {path} is empty")
    return rows


def _boxes(path: Path, ids: Sequence[int]) -> dict[int, tuple[float, float, float, float]]:
    table = _table(path, 5)
    out = {}
    for i in ids:
        if i not in table:
            raise ValueError(f"cub: {path} has no box for image {i}")
        try:
            x, y, w, h = (float(v) for v in table[i])
        except ValueError:
            raise ValueError(f"cub: {path}: the box of image {i} is not numeric: "
                             f"{table[i]}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            raise ValueError(f"cub: {path}: the box of image {i} is empty or not finite: "
                             f"{table[i]}")
        out[i] = (x, y, w, h)
    return out


def _crop_one(path: str, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            x, y, w, h = box
            left, top = max(0, math.floor(x)), max(0, math.floor(y))
            right, bottom = min(im.width, math.ceil(x + w)), min(im.height, math.ceil(y + h))
            if right <= left or bottom <= top:
                raise ValueError(f"the box {box} lies outside the {im.width}x{im.height} image")
            im = im.crop((left, top, right, bottom))
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BOX)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise ValueError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc


def _decode_cropped(paths: list[str], boxes: list[tuple[float, float, float, float]],
                    size: int, progress: bool, workers: int | None) -> np.ndarray:
    from tqdm.auto import tqdm

    n = len(paths)
    check_nbytes(n * size * size * 3, "image_size", f"{n} images of {size}x{size}")
    out = np.empty((n, size, size, 3), dtype=np.uint8)

    def run(start: int, stop: int) -> int:
        for i in range(start, stop):
            out[i] = _crop_one(paths[i], boxes[i], size)
        return stop - start

    bounds = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    with tqdm(total=n, desc="cub (cropped)", unit="img", disable=None if progress else True,
              leave=False) as bar:
        _run_chunks(run, bounds, workers or default_workers(), bar.update)
    return out


def _index(folder: Path) -> tuple[dict[int, str], dict[int, str], dict[int, int]]:
    """(class id -> name, image id -> path, image id -> class id), cross-checked."""
    classes = {i: v[0] for i, v in _table(folder / "classes.txt", 2).items()}
    images = {i: v[0] for i, v in _table(folder / "images.txt", 2).items()}
    labels_path = folder / "image_class_labels.txt"
    labels = {}
    for i, v in _table(labels_path, 2).items():
        try:
            labels[i] = int(v[0])
        except ValueError:
            raise ValueError(f"cub: {labels_path}: the class of image {i} is not an integer: "
                             f"{v[0]!r}") from None
    if set(labels) != set(images):
        only = sorted(set(images) ^ set(labels))
        raise ValueError(f"cub: images.txt and {labels_path.name} in {folder} list different "
                         f"image ids ({len(images)} and {len(labels)} ids; e.g. {only[:5]})")
    bad = sorted({c for c in labels.values() if c not in classes})
    if bad:
        raise ValueError(f"cub: {labels_path} uses class ids {bad[:5]} that classes.txt does "
                         f"not list (ids {min(classes)}..{max(classes)})")
    return classes, images, labels


def cub(
    root: str | os.PathLike[str],
    split: str = "train",
    image_size: int = 84,
    crop: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> ImageDataset:
    """Load one split of CUB-200-2011 (100 / 50 / 50 classes, the split of Chen et al.).

    Args:
        root: the ``CUB_200_2011`` folder or the folder holding it.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: output side length.
        crop: cut each image to its bounding box first (``bounding_boxes.txt``).
        progress: show a tqdm progress bar while decoding.
        workers: decoder threads (default: CPU count, at most 4).

    Returns:
        ImageDataset with RGB images ``(N, 3, S, S)`` uint8, grouped by class.

    Raises:
        FileNotFoundError: ``root``, an index file or an image does not exist.
        ValueError: a bad argument, a malformed index file, ids that disagree between the
            files, or an image that cannot be decoded (the message names the file).
    """
    split = check_split(split, "cub")
    size = check_size(image_size)
    crop = check_bool(crop, "crop")
    progress = check_bool(progress, "progress")
    workers = None if workers is None else check_int(workers, "workers", 1)
    root_p = as_root(root, "cub")
    folder = root_p if (root_p / "images.txt").exists() else root_p / "CUB_200_2011"
    if not (folder / "images.txt").exists():
        raise FileNotFoundError(f"cub: neither {root_p} nor {root_p / 'CUB_200_2011'} holds "
                                "images.txt")
    classes, images, labels = _index(folder)
    by_name = sorted(classes, key=lambda c: classes[c])
    chosen = [c for k, c in enumerate(by_name) if cub_split(k) == split]
    ids = [[i for i in images if labels[i] == c] for c in chosen]
    empty = [classes[c] for c, group in zip(chosen, ids) if not group]
    if empty:
        raise ValueError(f"cub: {folder / 'image_class_labels.txt'} gives no images to the "
                         f"classes {empty[:5]}")
    flat = [i for group in ids for i in group]
    paths = [str(folder / "images" / images[i]) for i in flat]
    if crop:
        boxes = _boxes(folder / "bounding_boxes.txt", flat)
        pixels = _decode_cropped(paths, [boxes[i] for i in flat], size, progress, workers)
    else:
        pixels = decode_images([(p, None) for p in paths], size, "RGB", progress,
                               f"cub {split}", workers)
    labels_out = np.repeat(np.arange(len(chosen), dtype=np.int64), [len(g) for g in ids])
    metadata = {"source": "cub", "root": str(folder), "split": split, "image_size": size,
                "crop": crop, "class_ids": [int(c) for c in chosen]}
    return ImageDataset(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), labels_out,
                        [classes[c] for c in chosen], metadata)
