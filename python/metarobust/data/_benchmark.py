"""What the readers of the few-shot benchmarks share: the split names, the class lists that
ship with the package (``data/splits/<benchmark>/<split>.txt``), a pickle reader for the
benchmarks' own files and the resize of arrays of images.

Pickles are read with ``encoding="latin1"``, which reads both Python 3 pickles and the
Python 2 pickles the benchmarks were published in (their ``str`` values, numpy buffers
included, come back as ``str`` decoded byte for byte). The unpickler only resolves the few
globals that data files need (numpy arrays, dtypes and scalars); a file that names anything
else is refused, so reading a data file never runs foreign code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_nbytes, check_path

__all__ = ["SPLITS", "as_root", "check_split", "first_existing", "hwc_images", "int_labels", "key",
           "load_pickle",
           "resize_images", "shipped_classes", "text"]

SPLITS = ("train", "val", "test")

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    ("collections", "OrderedDict"),
}


def check_split(split: object, reader: str) -> str:
    """``split`` as one of :data:`SPLITS`, or a ``TypeError``/``ValueError`` naming it."""
    if not isinstance(split, str):
        raise TypeError(f"{reader}: split must be a str (train, val or test), got "
                        f"{type(split).__name__}")
    if split not in SPLITS:
        raise ValueError(f"{reader}: split must be 'train', 'val' or 'test', got {split!r}")
    return split


def shipped_classes(benchmark: str, split: str) -> list[str]:
    """The class list shipped for ``benchmark``'s ``split`` (``#`` lines are comments)."""
    folder = resources.files("metarobust.data").joinpath("splits").joinpath(benchmark)
    ref = folder.joinpath(f"{split}.txt")
    lines = ref.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a data file does not need; refusing to "
                "load it"
            )
        return super().find_class(module, name)


def load_pickle(path: Path, what: str) -> Any:
    """The object pickled in ``path`` (a Python 2 or 3 pickle, any protocol).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names ``what``).
        ValueError: ``path`` is a directory, truncated, or not a data pickle.
    """
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    check_nbytes(path.stat().st_size, "path", f"reading {path}")
    try:
        with open(path, "rb") as f:  # streamed: the training pickles are gigabytes
            return _DataUnpickler(f, encoding="latin1").load()
    except (MemoryError, OSError):
        raise
    except Exception as exc:  # pickle raises many types on damaged input
        raise ValueError(
            f"{what} {path} cannot be unpickled (truncated or not a data pickle?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def text(value: Any) -> str:
    """A class name as ``str``: Python 2 strings arrive as ``str`` (latin1) or ``bytes``."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, str | np.str_):
        return str(value)
    if isinstance(value, np.bytes_):
        return bytes(value).decode("latin1")
    raise TypeError(f"expected a string, got {type(value).__name__}")


def key(mapping: Any, name: str, file: Path) -> Any:
    """``mapping[name]`` whether the file stored the key as ``str`` or as ``bytes``; a
    ``ValueError`` naming the file and the keys it has otherwise."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{file}: expected a pickled dict, found {type(mapping).__name__}")
    for k in (name, name.encode("latin1")):
        if k in mapping:
            return mapping[k]
    found = sorted(text(k) if isinstance(k, str | bytes) else repr(k) for k in mapping)
    raise ValueError(f"{file}: the key {name!r} is missing (keys: {found[:10]})")


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 images to ``(N, 3, size, size)``, each resized with area
    averaging (PIL ``Image.BOX``) as the folder readers do; images already ``size`` x
    ``size`` are only transposed."""
    from PIL import Image

    n, h, w = images.shape[:3]
    if (h, w) == (size, size):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    check_nbytes(n * 3 * size * size, "image_size", f"{n} images of {size}x{size}")
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        im = Image.fromarray(np.ascontiguousarray(images[i]), "RGB")
        out[i] = np.asarray(im.resize((size, size), Image.Resampling.BOX)).transpose(2, 0, 1)
    return out


def first_existing(candidates: list[Path]) -> Path | None:
    """The first of ``candidates`` that exists."""
    for c in candidates:
        if c.exists():
            return c
    return None


def as_root(root: str | os.PathLike[str], reader: str) -> Path:
    """``root`` as an existing directory, or a ``FileNotFoundError``/``ValueError``."""
    path = check_path(root, "root").expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{reader}: root {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"{reader}: root {path} is not a directory")
    return path


def hwc_images(value: Any, file: Path, name: str) -> np.ndarray:
    """``value`` as ``(N, H, W, 3)`` uint8 images, or a ``ValueError`` naming the file."""
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 4 \
            or value.shape[3] != 3:
        what = (f"an array of dtype {value.dtype} and shape {value.shape}"
                if isinstance(value, np.ndarray) else type(value).__name__)
        raise ValueError(f"{file}: {name!r} must be uint8 images of shape (N, H, W, 3), "
                         f"found {what}")
    return value


def int_labels(value: Any, n: int | None, file: Path, name: str) -> np.ndarray:
    """``value`` as ``n`` (any number if None) int64 labels >= 0, or a ``ValueError`` naming
    the file."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: {name!r} is not a list of integers: {exc}") from None
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise ValueError(f"{file}: {name!r} must be a list of integers, found dtype "
                         f"{arr.dtype}, shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{file}: {name!r} holds {arr.shape[0]} labels for {n} images")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"{file}: {name!r} holds a negative label {int(arr.min())}")
    return arr.astype(np.int64)
