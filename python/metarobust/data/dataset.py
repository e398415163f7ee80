"""The in-memory image dataset and its on-disk cache.

An :class:`ImageDataset` holds ``images`` (numpy ``uint8``, C-contiguous, ``(N, C, H, W)``),
``labels`` (numpy ``int64``, ``(N,)``, values ``0..num_classes-1``), ``class_names`` (one
string per label) and a JSON-serialisable ``metadata`` dict (``source``, ``split``,
``image_size``, ...).

Cache format (``ds.save(path)`` / ``load(path)``), format ``metarobust-dataset`` version 1:
``path`` is a directory holding exactly three files,

``images.npy``
    the images as a plain ``.npy`` file (dtype ``|u1``, C order, shape ``(N, C, H, W)``),
    loaded with ``np.load(mmap_mode="r")`` so that it is memory-mapped, not read;
``labels.npy``
    the labels (dtype ``<i8``, shape ``(N,)``);
``dataset.json``
    the sidecar::

        {"format": "metarobust-dataset", "version": 1,
         "num_images": N, "num_classes": K, "image_shape": [C, H, W],
         "class_names": [...], "metadata": {...},
         "arrays": {"images": {"file": "images.npy", "dtype": "|u1", "shape": [N, C, H, W],
                               "nbytes": ..., "blake2b": "<hex digest of the raw array bytes>"},
                    "labels": {"file": "labels.npy", "dtype": "<i8", "shape": [N], ...}}}

Writes are atomic: the three files go to a fresh temporary directory next to ``path``; each
is flushed and fsynced, then the directory is renamed onto ``path`` (an existing cache there
is moved aside first and deleted afterwards; it is put back if the rename fails). A failed
or interrupted save leaves ``path`` as it was and removes its temporary directory.

``load`` checks the format name and version, the ``.npy`` headers against the sidecar,
the exact file sizes (a truncated or padded file is refused before it is mapped) and the
BLAKE2b digest of each array. Any problem is
a ``ValueError`` that names the file and what is wrong; a cache is never half-read.

>>> import numpy as np, tempfile, os
>>> ds = ImageDataset(np.zeros((4, 1, 2, 2), np.uint8), np.array([0, 1, 1, 0]), ["a", "b"])
>>> ds.num_classes, len(ds)
(2, 4)
>>> path = os.path.join(tempfile.mkdtemp(), "tiny")
>>> ds.save(path)
>>> again = load(path)
>>> again.class_names, again.labels.tolist()
(['a', 'b'], [0, 1, 1, 0])
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_bool, check_nbytes, check_path
from .atomic import fresh_dir, replace_dir, write_file

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ImageDataset", "load"]

FORMAT_NAME = "metarobust-dataset"
FORMAT_VERSION = 1
SIDECAR = "dataset.json"
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
_DTYPES: dict[str, np.dtype] = {"images": np.dtype("|u1"), "labels": np.dtype("<i8")}


def _checked_images(images: Any) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` images, C-contiguous."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy uint8 array of shape (N, C, H, W), "
                        f"got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must have dtype uint8, got {images.dtype}; convert explicitly "
                        "(e.g. (x * 255).round().astype(np.uint8)) so nothing is silently "
                        "truncated")
    if images.ndim != 4:
        raise ValueError(f"images must have 4 dimensions (N, C, H, W), got shape {images.shape}")
    if not images.flags.c_contiguous:
        images = np.ascontiguousarray(images)
    return images


def _checked_labels(labels: Any, n: int) -> np.ndarray:
    """``n`` integer labels >= 0 (any integer dtype)."""
    try:
        labels_arr = np.asarray(labels)
    except (TypeError, ValueError) as e:  # ragged or unconvertible
        raise TypeError(f"labels must be a sequence of integers, got {type(labels).__name__} "
                        f"({e})") from None
    if labels_arr.size == 0 and labels_arr.dtype.kind == "f":
        labels_arr = labels_arr.astype(np.int64)  # np.asarray([]) is float64
    if labels_arr.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels_arr.dtype}")
    if labels_arr.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got shape {labels_arr.shape}")
    if labels_arr.shape[0] != n:
        raise ValueError(f"images and labels disagree on N: {n} images, "
                         f"{labels_arr.shape[0]} labels")
    low = int(labels_arr.min()) if labels_arr.size else 0
    if low < 0:
        raise ValueError(f"labels must be >= 0, got {low}")
    return labels_arr


def _class_names(class_names: Sequence[str] | None, high: int) -> list[str]:
    """The class names (default: the label values as strings), one per label up to
    ``high``."""
    if class_names is None:
        return [str(i) for i in range(high + 1)]
    if isinstance(class_names, str):
        raise TypeError("class_names must be a sequence of strings, got one string")
    if not isinstance(class_names, Iterable):
        raise TypeError(f"class_names must be a sequence of strings, got {class_names!r}")
    names = list(class_names)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"class_names must be strings, got {bad[0]!r}")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"class_names must be unique, repeated: {dup[:5]}")
    if high >= len(names):
        raise ValueError(f"labels must be < num_classes = len(class_names) = {len(names)}, "
                         f"got label {high}")
    return names


class ImageDataset:
    """Images with integer class labels, ready for episode sampling.

    Args:
        images: numpy ``uint8`` array ``(N, C, H, W)``. Other dtypes are refused (a
            ``TypeError``), never converted; a non-contiguous array is copied to C order.
        labels: integer array ``(N,)`` with values in ``0..num_classes-1``; stored as int64.
        class_names: one string per class (default ``["0", "1", ...]`` up to the largest
            label). Its length defines ``num_classes``.
        metadata: JSON-serialisable dict describing the source (copied).

    >>> import numpy as np
    >>> ds = ImageDataset(np.zeros((3, 1, 4, 4), np.uint8), [2, 0, 1])
    >>> ds.class_names, ds.num_classes, ds.image_shape
    (['0', '1', '2'], 3, (1, 4, 4))
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Any,
        class_names: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        images = _checked_images(images)
        labels_arr = _checked_labels(labels, images.shape[0])
        high = int(labels_arr.max()) if labels_arr.size else -1
        names = _class_names(class_names, high)
        if labels_arr.dtype != np.int64:
            labels_arr = labels_arr.astype(np.int64)
        elif not labels_arr.flags.c_contiguous:
            labels_arr = np.ascontiguousarray(labels_arr)
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        self.images: np.ndarray = images
        self.labels: np.ndarray = labels_arr
        self.class_names: list[str] = names
        self.metadata: dict[str, Any] = dict(metadata)

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)``."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        source = self.metadata.get("source", "?")
        return (
            f"ImageDataset(source={source!r}, images={len(self)}, "
            f"classes={self.num_classes}, image_shape={self.image_shape})"
        )

    def class_counts(self) -> np.ndarray:
        """Images per class, an int64 array of length ``num_classes``."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def subset(self, classes: Iterable[int | str]) -> ImageDataset:
        """A new dataset with only ``classes`` (labels or class names), relabelled ``0..k-1``
        in the order given. Images keep their relative order; arrays are copied.

        >>> import numpy as np
        >>> ds = ImageDataset(np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1),
        ...                   [0, 1, 2, 1], ["a", "b", "c"])
        >>> sub = ds.subset(["c", 1])
        >>> sub.class_names, sub.labels.tolist(), sub.images.ravel().tolist()
        (['c', 'b'], [1, 0, 1], [1, 2, 3])
        """
        if isinstance(classes, str | bytes):
            raise TypeError("classes must be an iterable of labels or class names, got a string")
        if not isinstance(classes, Iterable) or getattr(classes, "ndim", 1) == 0:
            raise TypeError(f"classes must be an iterable of labels or class names, got "
                            f"{classes!r}")
        by_name = {name: i for i, name in enumerate(self.class_names)}
        chosen: list[int] = []
        for c in classes:
            if isinstance(c, str):
                if c not in by_name:
                    raise ValueError(f"classes: no class named {c!r} in this dataset")
                chosen.append(by_name[c])
            elif isinstance(c, int | np.integer) and not isinstance(c, bool):
                if not 0 <= int(c) < self.num_classes:
                    raise ValueError(
                        f"classes: label {int(c)} is out of range 0..{self.num_classes - 1}"
                    )
                chosen.append(int(c))
            else:
                raise TypeError(f"classes: expected an int label or a class name, got {c!r}")
        if not chosen:
            raise ValueError("classes must name at least one class")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"classes must not repeat a class, got {chosen}")
        mapping = np.full(self.num_classes, -1, dtype=np.int64)
        mapping[chosen] = np.arange(len(chosen), dtype=np.int64)
        new_labels = mapping[self.labels]
        keep = np.flatnonzero(new_labels >= 0)
        meta = dict(self.metadata)
        meta["subset_of"] = [self.class_names[i] for i in chosen]
        return ImageDataset(
            np.ascontiguousarray(self.images[keep]),
            new_labels[keep],
            [self.class_names[i] for i in chosen],
            meta,
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the cache directory ``path`` atomically (see the module docstring).

        An existing cache at ``path`` is replaced; any other existing file or non-empty
        directory there is refused with a ``ValueError``.
        """
        save(self, path)


def _digest(arr: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=32)
    if arr.size:
        h.update(np.ascontiguousarray(arr).data.cast("B"))
    return h.hexdigest()


def _check_target(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise ValueError(f"save: {path} exists and is not a dataset cache directory; not replacing")
    entries = set(os.listdir(path))
    if entries and SIDECAR not in entries:
        raise ValueError(
            f"save: {path} is a non-empty directory without {SIDECAR}, so it is not a "
            "dataset cache; not replacing it"
        )
    extra = entries - {SIDECAR, IMAGES_FILE, LABELS_FILE}
    if extra:
        raise ValueError(
            f"save: the cache directory {path} holds other files {sorted(extra)[:5]}; "
            "not replacing it"
        )


def save(dataset: ImageDataset, path: str | os.PathLike[str]) -> None:
    """Write ``dataset`` to the cache directory ``path`` (same as ``dataset.save(path)``)."""
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"dataset must be an ImageDataset, got {type(dataset).__name__}")
    path = check_path(path, "path")
    if path.name in ("", ".", ".."):
        raise ValueError(f"path must name a cache directory, got {str(path)!r}")
    images = np.ascontiguousarray(dataset.images)
    labels = np.ascontiguousarray(dataset.labels, dtype=_DTYPES["labels"])
    try:
        metadata_json = json.loads(json.dumps(dataset.metadata, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"dataset.metadata must be JSON-serialisable: {exc}") from exc
    _check_target(path)
    arrays = {}
    for key, arr, fname in (("images", images, IMAGES_FILE), ("labels", labels, LABELS_FILE)):
        arrays[key] = {
            "file": fname,
            "dtype": _DTYPES[key].str,
            "shape": [int(d) for d in arr.shape],
            "nbytes": int(arr.nbytes),
            "blake2b": _digest(arr),
        }
    sidecar = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "num_images": len(dataset),
        "num_classes": dataset.num_classes,
        "image_shape": list(dataset.image_shape),
        "class_names": list(dataset.class_names),
        "metadata": metadata_json,
        "arrays": arrays,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_dir(path.parent, f".{path.name}.tmp-")
    try:
        write_file(tmp / IMAGES_FILE,
                   lambda f: np.lib.format.write_array(f, images, allow_pickle=False))
        write_file(tmp / LABELS_FILE,
                   lambda f: np.lib.format.write_array(f, labels, allow_pickle=False))
        text = json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n"
        write_file(tmp / SIDECAR, lambda f: f.write(text.encode("utf-8")))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)


def _bad(file: Path, what: str) -> ValueError:
    return ValueError(f"dataset cache file {file}: {what}")


def _read_sidecar(path: Path) -> dict[str, Any]:
    file = path / SIDECAR
    if not file.is_file():
        raise ValueError(f"{path} is not a complete dataset cache: the sidecar {file} is missing")
    try:
        sidecar = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(file, f"not valid JSON (truncated or corrupted?): {exc}") from exc
    if not isinstance(sidecar, dict):
        raise _bad(file, "not a JSON object")
    if sidecar.get("format") != FORMAT_NAME:
        raise _bad(file, f"format is {sidecar.get('format')!r}, expected {FORMAT_NAME!r}")
    if sidecar.get("version") != FORMAT_VERSION:
        raise _bad(
            file,
            f"format version {sidecar.get('version')!r} is not supported; this metarobust "
            f"reads version {FORMAT_VERSION} (rebuild the cache with `metarobust data prepare`)",
        )
    for key in ("class_names", "metadata", "arrays"):
        if key not in sidecar:
            raise _bad(file, f"the key {key!r} is missing")
    return sidecar


def _open_array(path: Path, key: str, spec: Any, sidecar_file: Path, mmap: bool, verify: bool):
    if not isinstance(spec, dict) or spec.get("file") not in (IMAGES_FILE, LABELS_FILE):
        raise _bad(sidecar_file, f"arrays.{key} is malformed: {spec!r}")
    file = path / spec["file"]
    if not file.is_file():
        raise ValueError(f"{path} is not a complete dataset cache: {file} is missing")
    expected_dtype = _DTYPES[key]
    try:
        shape = tuple(int(d) for d in spec["shape"])
        digest = str(spec["blake2b"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(sidecar_file, f"arrays.{key} is malformed: {spec!r}") from exc
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                h_shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                h_shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise _bad(file, f"the .npy header is unreadable (truncated or corrupted?): {exc}") from exc
    if dtype != expected_dtype or fortran or tuple(h_shape) != shape:
        raise _bad(
            file,
            f"the .npy header says dtype {dtype.str}, shape {tuple(h_shape)}, "
            f"fortran_order {fortran}; {sidecar_file.name} says dtype {expected_dtype.str}, "
            f"shape {shape}, C order",
        )
    nbytes = int(np.prod(shape, dtype=np.int64)) * expected_dtype.itemsize
    if size != offset + nbytes:
        what = "truncated" if size < offset + nbytes else "longer than its header says"
        raise _bad(
            file,
            f"{what}: expected {offset + nbytes} bytes ({offset} header + {nbytes} data), "
            f"found {size}",
        )
    if not mmap:
        check_nbytes(nbytes, "mmap", f"reading {file} into memory (mmap=False)")
    try:
        arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _bad(file, f"cannot be read: {exc}") from exc
    if verify and _digest(arr) != digest:
        raise _bad(
            file,
            f"checksum mismatch: blake2b of the data is {_digest(arr)}, {sidecar_file.name} "
            f"records {digest}; the file is corrupted (rebuild the cache)",
        )
    return arr


def load(path: str | os.PathLike[str], mmap: bool = True, verify: bool = True) -> ImageDataset:
    """Load a cache written by :meth:`ImageDataset.save`.

    Args:
        path: the cache directory (or its ``dataset.json``).
        mmap: memory-map ``images.npy`` read-only (default) instead of reading it.
        verify: check the BLAKE2b digests of both arrays (default; one pass over the data).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the cache is incomplete, truncated, corrupted or of another version;
            the message names the file.
    """
    path = check_path(path, "path")
    mmap = check_bool(mmap, "mmap")
    verify = check_bool(verify, "verify")
    if path.name == SIDECAR and path.is_file():
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"dataset cache {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"dataset cache {path} is not a directory (expected {SIDECAR} in it)")
    sidecar = _read_sidecar(path)
    sidecar_file = path / SIDECAR
    arrays = sidecar["arrays"]
    if not isinstance(arrays, dict) or set(arrays) != {"images", "labels"}:
        raise _bad(sidecar_file, f"arrays must describe images and labels, got {arrays!r}")
    images = _open_array(path, "images", arrays["images"], sidecar_file, mmap, verify)
    labels = _open_array(path, "labels", arrays["labels"], sidecar_file, mmap, verify)
    if images.ndim != 4:
        raise _bad(path / IMAGES_FILE, f"expected 4 dimensions, got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise _bad(
            path / LABELS_FILE, f"shape {labels.shape} does not match {images.shape[0]} images"
        )
    try:
        return ImageDataset(images, labels, sidecar["class_names"], sidecar["metadata"])
    except (TypeError, ValueError) as exc:
        raise _bad(sidecar_file, f"inconsistent with the arrays: {exc}") from exc
