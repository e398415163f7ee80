"""MNIST-format IDX files (images ``0x00000803``, labels ``0x00000801``), gzipped or not.

The IDX header is two zero bytes, a type byte (``0x08`` = unsigned byte), the number of
dimensions, then one big-endian uint32 per dimension; the body is the values in C order.
Gzip is detected by its magic bytes (``1f 8b``), not by the file name. Magic numbers, body
lengths (too short *or* too long) and the image/label counts are checked; labels are
remapped to ``0..k-1`` in sorted order, with ``class_names`` the original values.

>>> import numpy as np, os, struct, tempfile
>>> d = tempfile.mkdtemp()
>>> with open(os.path.join(d, "img"), "wb") as f:
...     _ = f.write(struct.pack(">IIII", 0x803, 3, 2, 2) + bytes(range(12)))
>>> with open(os.path.join(d, "lab"), "wb") as f:
...     _ = f.write(struct.pack(">II", 0x801, 3) + bytes([7, 3, 7]))
>>> ds = idx(os.path.join(d, "img"), os.path.join(d, "lab"))
>>> ds.images.shape, ds.labels.tolist(), ds.class_names
((3, 1, 2, 2), [1, 0, 1], ['3', '7'])
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .._checks import check_int, check_path
from .dataset import ImageDataset

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "idx", "read_idx"]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{what} {path}: corrupt or truncated gzip data: {exc}") from exc
    return raw


def read_idx(path: str | os.PathLike[str], magic: int, what: str = "path") -> np.ndarray:
    """Read one IDX file whose magic number must be ``magic``; returns a read-only uint8
    array of the shape its header gives.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: wrong magic number, truncated header or body, or bytes after the body.
    """
    path = check_path(path, what)
    magic = check_int(magic, "magic", 0, 0xFFFFFFFF)
    data = _read_bytes(path, what)
    if len(data) < 4:
        raise ValueError(f"{what} {path}: {len(data)} bytes, too short for an IDX header")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise ValueError(
            f"{what} {path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"(unsigned bytes, {magic & 0xFF} dimension{'s' if magic & 0xFF != 1 else ''})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{what} {path}: truncated header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    body = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != body:
        state = "truncated" if len(data) - header < body else "has extra bytes"
        raise ValueError(
            f"{what} {path}: {state}: header {tuple(dims)} needs {body} bytes of data after "
            f"the {header}-byte header, found {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, count=body, offset=header).reshape(dims)


def idx(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> ImageDataset:
    """Load an MNIST-format image file and its label file.

    Args:
        images_path: IDX file with magic ``0x00000803`` (N, H, W), gzipped or not.
        labels_path: IDX file with magic ``0x00000801`` (N,), gzipped or not.

    Returns:
        ImageDataset with images ``(N, 1, H, W)`` uint8 and labels remapped to ``0..k-1``
        (``class_names`` holds the original label values as strings).

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: wrong magic, truncated body, or image/label counts that differ.
    """
    check_path(images_path, "images_path")
    check_path(labels_path, "labels_path")
    images = read_idx(images_path, IMAGES_MAGIC, "images_path")
    labels = read_idx(labels_path, LABELS_MAGIC, "labels_path")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"count mismatch: images_path {images_path} holds {images.shape[0]} images, "
            f"labels_path {labels_path} holds {labels.shape[0]} labels"
        )
    values, remapped = np.unique(labels, return_inverse=True)
    n, h, w = images.shape
    metadata = {
        "source": "idx",
        "images_path": str(images_path),
        "labels_path": str(labels_path),
        "image_size": h if h == w else [h, w],
    }
    return ImageDataset(
        images.reshape(n, 1, h, w),
        remapped.reshape(-1).astype(np.int64),
        [str(int(v)) for v in values],
        metadata,
    )
