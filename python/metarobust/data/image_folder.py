"""Class-per-folder image trees (PNG/JPEG), optionally with a Ravi & Larochelle CSV split.

Without a split file, every sub-folder of ``root`` (sorted, hidden ones skipped) is a class
and every ``.png``/``.jpg``/``.jpeg`` file below it (recursively, sorted) is one of its
images. With ``split_csv``, the CSV (header line ``filename,label``) decides: each row names
a file found anywhere under ``root`` (by relative path, or by base name when that is unique)
and its class label; classes are the sorted distinct labels.

Every image is converted (``"L"`` or ``"RGB"``) and resized to ``image_size`` x
``image_size`` with area averaging (``Image.BOX``), so mixed input sizes and modes are fine.
Decoding runs on a thread pool with a tqdm progress bar.

>>> import numpy as np, os, tempfile
>>> from PIL import Image
>>> root = tempfile.mkdtemp()
>>> for cls in ("cat", "dog"):
...     os.makedirs(os.path.join(root, cls))
...     Image.new("RGB", (10, 8), "red").save(os.path.join(root, cls, "a.png"))
>>> ds = image_folder(root, image_size=4, progress=False)
>>> ds.class_names, ds.images.shape, ds.labels.tolist()
(['cat', 'dog'], (2, 3, 4, 4), [0, 1])
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_bool, check_int, check_nbytes, check_path
from .dataset import ImageDataset

__all__ = ["IMAGE_EXTENSIONS", "decode_images", "image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_CHUNK = 256


def check_size(image_size: object, name: str = "image_size") -> int:
    """``image_size`` as a positive int, or a ``ValueError``/``TypeError`` naming it."""
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise TypeError(f"{name} must be a positive int, got {image_size!r}")
    if not 1 <= int(image_size) <= 4096:
        raise ValueError(f"{name} must be in 1..4096, got {image_size}")
    return int(image_size)


def default_workers() -> int:
    """Decoder threads: the CPU count, at most 4 (decoding small PNGs is mostly GIL-bound)."""
    return max(1, min(4, os.cpu_count() or 1))


_TRANSPOSE = {90: "ROTATE_90", 180: "ROTATE_180", 270: "ROTATE_270"}


def _decode_one(
    name: str, data: bytes | None, size: int, mode: str, rotations: Sequence[int]
) -> list[np.ndarray]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data) if data is not None else name) as im:
            im = im.convert(mode)
            out = []
            for rot in rotations:
                turned = im.transpose(getattr(Image.Transpose, _TRANSPOSE[rot])) if rot else im
                if turned.size != (size, size):
                    turned = turned.resize((size, size), Image.Resampling.BOX)
                out.append(np.asarray(turned, dtype=np.uint8))
            return out
    except FileNotFoundError:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise ValueError(f"cannot decode image {name}: {type(exc).__name__}: {exc}") from exc


def decode_images(
    items: Sequence[tuple[str, bytes | None]],
    image_size: int,
    mode: str = "L",
    progress: bool = True,
    desc: str = "decode",
    workers: int | None = None,
    rotations: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Decode ``items`` (``(name, bytes)``, or ``(path, None)`` to read the file) to a uint8
    array ``(N, S, S)`` (mode ``"L"``) or ``(N, S, S, 3)`` (``"RGB"``), in parallel threads.

    ``rotations`` (optional, one list per item, degrees counter-clockwise in 0/90/180/270)
    asks for several outputs per item: each rotation is applied at full resolution, before
    the resize, and the rows come item by item in the order given (N = total count).
    A file that cannot be decoded raises a ``ValueError`` naming it.

    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("L", (6, 6), 200).save(buf, "PNG")
    >>> decode_images([("x.png", buf.getvalue())], 3, progress=False)[0].tolist()
    [[200, 200, 200], [200, 200, 200], [200, 200, 200]]
    """
    from tqdm.auto import tqdm

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    n = len(items)
    rots = _checked_rotations(rotations, n)
    first_row = np.concatenate([[0], np.cumsum([len(r) for r in rots], dtype=np.int64)])
    shape = (int(first_row[-1]), image_size, image_size) + ((3,) if mode == "RGB" else ())
    workers = default_workers() if workers is None else check_int(workers, "workers", 1)
    check_nbytes(int(np.prod(shape)), "image_size", f"{shape[0]} decoded images of "
                 f"{image_size}x{image_size}")
    out = np.empty(shape, dtype=np.uint8)

    def run(start: int, stop: int) -> int:
        for i in range(start, stop):
            name, data = items[i]
            row = int(first_row[i])
            for k, arr in enumerate(_decode_one(name, data, image_size, mode, rots[i])):
                out[row + k] = arr
        return stop - start

    bounds = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    with tqdm(total=n, desc=desc, unit="img", disable=None if progress else True,
              leave=False) as bar:  # None: no bars where stderr is no terminal (logs)
        if workers == 1:
            for s, e in bounds:
                bar.update(run(s, e))
        else:
            _run_chunks(run, bounds, workers, bar.update)
    return out


def _checked_rotations(rotations: Sequence[Sequence[int]] | None, n: int
                       ) -> Sequence[Sequence[int]]:
    if rotations is None:
        return [(0,)] * n
    if len(rotations) != n:
        raise ValueError(f"rotations must have one entry per item ({n}), got {len(rotations)}")
    bad = {r for rs in rotations for r in rs} - {0, 90, 180, 270}
    if bad:
        raise ValueError(f"rotations must be 0, 90, 180 or 270 degrees, got {sorted(bad)}")
    return rotations


def _run_chunks(run: Callable[[int, int], int], bounds: list[tuple[int, int]], workers: int,
                done_items: Callable[[int], Any]) -> None:
    """``run(start, stop)`` for every chunk on ``workers`` threads; the first error cancels
    the chunks not started and is raised."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending = {pool.submit(run, s, e) for s, e in bounds}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                error = fut.exception()
                if error is not None:
                    for p in pending:
                        p.cancel()
                    raise error
                done_items(fut.result())


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _images_below(folder: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(f))
    return found


def _from_folders(root: Path) -> tuple[list[str], list[list[Path]]]:
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"image_folder: root {root} has no class sub-folders")
    files = []
    for c in classes:
        imgs = _images_below(root / c)
        if not imgs:
            raise ValueError(
                f"image_folder: class folder {root / c} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)})"
            )
        files.append(imgs)
    return classes, files


def _read_csv(split_csv: Path) -> list[tuple[int, str, str]]:
    if not split_csv.is_file():
        raise FileNotFoundError(f"split_csv {split_csv} does not exist")
    rows = []
    with open(split_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["filename", "label"]:
            raise ValueError(
                f"split_csv {split_csv}: the first line must be 'filename,label', got {header}"
            )
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ValueError(f"split_csv {split_csv} line {line}: expected filename,label")
            fname, label = row[0].strip(), row[1].strip()
            if fname in seen:
                raise ValueError(
                    f"split_csv {split_csv} line {line}: {fname!r} already listed on line "
                    f"{seen[fname]}"
                )
            seen[fname] = line
            rows.append((line, fname, label))
    if not rows:
        raise ValueError(f"split_csv {split_csv} lists no images")
    return rows


def _from_csv(root: Path, split_csv: Path) -> tuple[list[str], list[list[Path]]]:
    rows = _read_csv(split_csv)
    by_name: dict[str, list[Path]] = {}
    for p in _images_below(root):
        by_name.setdefault(p.name, []).append(p)
    groups: dict[str, list[Path]] = {}
    missing, ambiguous = [], []
    for _line, fname, label in rows:
        direct = root / fname
        if direct.is_file():
            path = direct
        else:
            hits = by_name.get(os.path.basename(fname), [])
            if not hits:
                missing.append(fname)
                continue
            if len(hits) > 1:
                ambiguous.append(f"{fname} ({len(hits)} files)")
                continue
            path = hits[0]
        groups.setdefault(label, []).append(path)
    if missing:
        raise ValueError(
            f"image_folder: {len(missing)} file(s) listed in {split_csv} are not under "
            f"{root}: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    if ambiguous:
        raise ValueError(
            f"image_folder: file names in {split_csv} match several files under {root}: "
            f"{', '.join(ambiguous[:10])}; give paths relative to root instead"
        )
    classes = sorted(groups)
    return classes, [groups[c] for c in classes]


def image_folder(
    root: str | os.PathLike[str],
    image_size: int = 84,
    grayscale: bool = False,
    split_csv: str | os.PathLike[str] | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> ImageDataset:
    """Load a class-per-folder image tree, or the images a ``filename,label`` CSV names.

    Args:
        root: the folder holding one sub-folder per class (or, with ``split_csv``, the
            images anywhere below it).
        image_size: output side length; every image is resized with area averaging.
        grayscale: convert to one channel (``"L"``) instead of three (``"RGB"``).
        split_csv: a CSV with header ``filename,label`` (Ravi & Larochelle format).
        progress: show a tqdm progress bar.
        workers: decoder threads (default: CPU count, at most 4).

    Returns:
        ImageDataset with images ``(N, 1 or 3, S, S)`` uint8, grouped by class.

    Raises:
        FileNotFoundError: ``root`` or ``split_csv`` does not exist.
        ValueError: no classes, a class with no images, a listed file missing, or an image
            that cannot be decoded (the message names it).
    """
    size = check_size(image_size)
    root_p = check_path(root, "root")
    grayscale = check_bool(grayscale, "grayscale")
    progress = check_bool(progress, "progress")
    csv_p = None if split_csv is None else check_path(split_csv, "split_csv")
    workers = None if workers is None else check_int(workers, "workers", 1)
    if not root_p.exists():
        raise FileNotFoundError(f"image_folder: root {root_p} does not exist")
    if not root_p.is_dir():
        raise ValueError(f"image_folder: root {root_p} is not a directory")
    if csv_p is None:
        classes, files = _from_folders(root_p)
    else:
        classes, files = _from_csv(root_p, csv_p)
    items = [(str(p), None) for group in files for p in group]
    mode = "L" if grayscale else "RGB"
    pixels = decode_images(items, size, mode, progress, f"image_folder {root_p.name}", workers)
    if grayscale:
        images = pixels[:, None]
    else:
        images = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(g) for g in files])
    metadata = {
        "source": "image_folder",
        "root": str(root_p),
        "split": None if split_csv is None else str(split_csv),
        "image_size": size,
        "grayscale": bool(grayscale),
    }
    return ImageDataset(images, labels, classes, metadata)
