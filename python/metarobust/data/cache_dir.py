"""Finding the cache of a split under a data root, for ``--dataset cache`` (and any
``--data-root`` that holds caches).

A data root ``DIR`` holds either one cache (``DIR/dataset.json``, as ``metarobust data
prepare ... --out DIR`` writes it) or one cache per split in sub-directories
(``DIR/<split>/dataset.json``: prepare each split with ``--out DIR/<split>``). The cache of
split ``S`` is ``DIR/S`` when that is a cache. Without a split, the role's usual names are
tried in order (training: ``train``, ``background``; validation: ``val``, ``validation``;
testing: ``test``, ``evaluation``), and then ``DIR`` itself when it is one cache: one cache
serves every role that names no split.

>>> find_cache("/nonexistent", None, "train") is None
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .dataset import SIDECAR, ImageDataset, load

__all__ = ["ROLE_SPLITS", "cache_image_shape", "find_cache", "is_cache", "list_caches",
           "load_split"]

ROLE_SPLITS = {"train": ("train", "background"), "val": ("val", "validation"),
               "test": ("test", "evaluation")}


def is_cache(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is a dataset cache directory (it holds ``dataset.json``)."""
    return path is not None and (Path(path) / SIDECAR).is_file()


def list_caches(root: str | os.PathLike[str]) -> list[str]:
    """The names of the sub-directories of ``root`` that are caches, sorted."""
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and is_cache(e.path))
    except OSError:
        return []


def find_cache(root: str | os.PathLike[str] | None, split: str | None,
               role: str) -> Path | None:
    """The cache directory of ``split`` (or of ``role``'s usual split names) under
    ``root``, or None when ``root`` holds no such cache (see the module docstring)."""
    if root is None or not Path(root).is_dir():
        return None
    names = (split,) if split else ROLE_SPLITS.get(role, ())
    for name in names:
        if is_cache(Path(root) / name):
            return Path(root) / name
    if not split and is_cache(root):
        return Path(root)
    return None


def cache_image_shape(path: str | os.PathLike[str]) -> tuple[int, ...] | None:
    """``(C, H, W)`` as the cache's sidecar records it, None if it cannot be read (the
    loader then says what is wrong)."""
    try:
        shape = json.loads((Path(path) / SIDECAR).read_text(encoding="utf-8"))["image_shape"]
        return tuple(int(d) for d in shape)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_split(root: str | os.PathLike[str], split: str | None, role: str,
               image_size: int | None = None) -> ImageDataset:
    """The cache of ``split`` (or ``role``) under ``root``, memory-mapped; ``image_size``
    (if given) must be the cache's image side.

    Raises:
        FileNotFoundError: ``root`` holds no cache for the split; the message lists the
            caches it holds.
        ValueError: the cache's images are not ``image_size`` pixels square.
    """
    path = find_cache(root, split, role)
    if path is None:
        held = list_caches(root) if Path(root).is_dir() else []
        wanted = repr(split) if split else " or ".join(repr(n) for n in ROLE_SPLITS[role])
        raise FileNotFoundError(
            f"data_root: {str(root)!r} holds no dataset cache for split {wanted}; it "
            + (f"holds the caches {held} (pass --split NAME)" if held else
               "is not a cache (no dataset.json) and has no cache sub-directories")
            + " (write one with `metarobust data prepare ... --out DIR/SPLIT`)")
    ds = load(path)
    _, h, w = ds.image_shape
    if image_size is not None and (h, w) != (image_size, image_size):
        raise ValueError(f"image_size: the cache {path} holds {h}x{w} images, not "
                         f"{image_size}x{image_size} (leave image_size unset to use the "
                         "cache's, or prepare the cache at that size)")
    return ds
