"""Omniglot (Lake et al., 2015) from the torchvision-style PNG tree or the official zips.

Sets are found by name under ``root``: a set ``NAME`` is the folder ``images_NAME/`` or the
archive ``images_NAME.zip`` (the folder wins when both exist), looked for in ``root``,
``root/omniglot-py`` and ``root/omniglot-official``. So ``root`` may be the folder holding
``images_background/`` (e.g. ``DATA/omniglot-py``) or its parent (``DATA``).
Known names: ``background``, ``evaluation``, ``background_small1``, ``background_small2``.
``root`` may also be a zip archive itself (e.g. ``images_background_small1.zip``); the
archive is then the whole set and ``split`` must be its name, the name of the set it is
a subset of (``"background"`` for ``..._small1``), or a split file.

A split file lists one class per line, ``<Alphabet>/characterNN`` or
``<Alphabet>/characterNN/rotDDD`` (DDD in 000, 090, 180, 270: the Vinyals et al. format),
looked up in both the background and the evaluation set. Blank lines and ``#`` comments are
skipped.

Class names are ``"Alphabet/characterNN"`` (with ``"/rotDDD"`` for rotated classes), in the
order of the split file, or sorted by alphabet then character for a named set. Images are
``(N, 1, S, S)`` uint8, resized from 105x105 with area averaging (PIL ``Image.BOX`` on the
``"L"`` conversion) and keep the source polarity: 0 is ink, 255 the white background.
Rotations are counter-clockwise (as PIL ``Image.rotate``) and applied to the full-size
drawing before it is resized.

>>> import os
>>> root = os.environ.get("METAROBUST_DATA")
>>> if root:  # doctest: +SKIP
...     ds = omniglot(root, "background", image_size=28, progress=False)
...     print(ds.images.shape, ds.num_classes, ds.class_names[0])
(19280, 1, 28, 28) 964 Alphabet_of_the_Magi/character01
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .._checks import check_bool, check_int, check_path
from .dataset import ImageDataset
from .image_folder import check_size, decode_images

__all__ = ["ROTATIONS", "omniglot", "omniglot_index"]

ROTATIONS = (0, 90, 180, 270)
_SET_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_ROT = re.compile(r"^rot(\d{3})$")


@dataclass(eq=False)
class _Set:
    """One Omniglot set: character key ``Alphabet/characterNN`` -> its image sources."""

    name: str
    location: str
    chars: dict[str, list[str]] = field(default_factory=dict)
    archive: Path | None = None  # a zip archive; the sources are member names in it

    def alphabets(self) -> set[str]:
        return {k.split("/", 1)[0] for k in self.chars}


def _dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _scan_tree(name: str, folder: Path) -> _Set:
    s = _Set(name, str(folder))
    alphabets = _dirs(folder)
    if not alphabets:
        raise ValueError(f"omniglot: set folder {folder} is empty (no alphabet folders)")
    for alpha in alphabets:
        chars = _dirs(folder / alpha)
        if not chars:
            raise ValueError(f"omniglot: alphabet folder {folder / alpha} has no character folders")
        for ch in chars:
            d = folder / alpha / ch
            pngs = sorted(
                e.name
                for e in os.scandir(d)
                if e.is_file() and e.name.lower().endswith(".png") and not e.name.startswith(".")
            )
            if not pngs:
                raise ValueError(f"omniglot: character folder {d} holds no .png images")
            s.chars[f"{alpha}/{ch}"] = [str(d / p) for p in pngs]
    return s


def _scan_zip(archive: Path) -> _Set:
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"omniglot: {archive} is not a readable zip archive: {exc}") from exc
    prefixes = set()
    chars: dict[str, list[str]] = {}
    for member in names:
        parts = PurePosixPath(member).parts
        if (
            member.endswith("/")
            or not parts[-1].lower().endswith(".png")
            or any(p.startswith((".", "__MACOSX")) for p in parts)
        ):
            continue
        if len(parts) < 3:
            raise ValueError(
                f"omniglot: {archive}: {member} is not inside <Alphabet>/<character>/ folders"
            )
        prefixes.add("/".join(parts[:-3]))
        chars.setdefault(f"{parts[-3]}/{parts[-2]}", []).append(member)
    if not chars:
        raise ValueError(f"omniglot: zip archive {archive} holds no .png images")
    if len(prefixes) != 1:
        raise ValueError(f"omniglot: {archive} mixes several top folders: {sorted(prefixes)}")
    prefix = prefixes.pop()
    top = prefix.rsplit("/", 1)[-1] if prefix else archive.stem
    name = top[len("images_") :] if top.startswith("images_") else top
    s = _Set(name, str(archive), archive=archive)
    for key in sorted(chars):
        s.chars[key] = sorted(chars[key])
    return s


def _find_set(root: Path, name: str) -> _Set | None:
    for base in (root, root / "omniglot-py", root / "omniglot-official"):
        folder = base / f"images_{name}"
        if folder.is_dir():
            return _scan_tree(name, folder)
        archive = base / f"images_{name}.zip"
        if archive.is_file():
            return _scan_zip(archive)
    return None


def _searched(root: Path, name: str) -> str:
    return (
        f"looked for images_{name}/ and images_{name}.zip in {root}, {root / 'omniglot-py'} "
        f"and {root / 'omniglot-official'}"
    )


def _parse_split_file(path: Path) -> list[tuple[int, str, int | None]]:
    """Lines of a split file as ``(line number, "Alphabet/characterNN", rotation or None)``."""
    entries: list[tuple[int, str, int | None]] = []
    seen: dict[tuple[str, int | None], int] = {}
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.strip("/").split("/")
            rot = None
            if len(parts) == 3:
                m = _ROT.match(parts[2])
                if not m or int(m.group(1)) not in ROTATIONS:
                    raise ValueError(
                        f"split file {path} line {number}: {line!r} ends in {parts[2]!r}; "
                        "expected rot000, rot090, rot180 or rot270"
                    )
                rot = int(m.group(1))
            elif len(parts) != 2:
                raise ValueError(
                    f"split file {path} line {number}: {line!r} is not "
                    "<Alphabet>/characterNN or <Alphabet>/characterNN/rotDDD"
                )
            key = (f"{parts[0]}/{parts[1]}", rot)
            if key in seen:
                raise ValueError(
                    f"split file {path} line {number}: {line!r} repeats line {seen[key]}"
                )
            seen[key] = number
            entries.append((number, key[0], rot))
    if not entries:
        raise ValueError(f"split file {path} lists no classes")
    return entries


def _is_set_name(split: object) -> bool:
    return isinstance(split, str) and bool(_SET_NAME.match(split)) and not os.path.isfile(split)


def _resolve(root: Path, split: str | os.PathLike[str], rotations: bool):
    """The classes to load: ``[(class name, set, character key, rotation)]`` and set names."""
    if not isinstance(rotations, bool):
        raise TypeError(f"rotations must be a bool, got {rotations!r}")
    if not isinstance(split, str | os.PathLike):
        raise TypeError(f"split must be a set name or a split file path, got {split!r}")
    if not root.exists():
        raise FileNotFoundError(f"omniglot: root {root} does not exist")
    zip_root = root.is_file()
    if zip_root and not zipfile.is_zipfile(root):
        raise ValueError(f"omniglot: root {root} is a file but not a zip archive")
    rots = ROTATIONS if rotations else (None,)

    if _is_set_name(split):
        return _resolve_set(root, str(split), zip_root, rots)
    return _resolve_split_file(root, split, zip_root, rotations, rots)


def _resolve_set(root: Path, name: str, zip_root: bool, rots: tuple) -> tuple[list, list[str]]:
    """The classes of a named set (background, evaluation, ...), every rotation in ``rots``."""
    if zip_root:
        s = _scan_zip(root)
        if s.name != name and not s.name.startswith(name + "_"):
            raise ValueError(
                f"omniglot: split={name!r} does not match the archive {root}, which holds "
                f"the set {s.name!r}; pass split={s.name!r} or a split file"
            )
    else:
        found = _find_set(root, name)
        if found is None:
            raise FileNotFoundError(
                f"omniglot: no set {name!r} under root: {_searched(root, name)}"
            )
        s = found
    classes = []
    for key in s.chars:  # sorted by alphabet, then character
        for r in rots:
            classes.append((key if r is None else f"{key}/rot{r:03d}", s, key, r))
    return classes, [s.name]


def _resolve_split_file(root: Path, split: str | os.PathLike[str], zip_root: bool,
                        rotations: bool, rots: tuple) -> tuple[list, list[str]]:
    """The classes a split file names, looked up in the sets under ``root``."""
    split_path = Path(split)
    if not split_path.is_file():
        raise FileNotFoundError(
            f"omniglot: split {str(split)!r} is neither a set name (background, evaluation, "
            "background_small1, background_small2) nor an existing split file"
        )
    entries = _parse_split_file(split_path)
    if rotations and any(r is not None for _, _, r in entries):
        number = next(n for n, _, r in entries if r is not None)
        raise ValueError(
            f"omniglot: rotations=True cannot be combined with the split file {split_path}, "
            f"whose lines name rotations (line {number}); those lines already pick them"
        )
    if zip_root:
        sets = [_scan_zip(root)]
    else:
        sets = [s for s in (_find_set(root, n) for n in ("background", "evaluation")) if s]
        if not sets:
            raise FileNotFoundError(
                f"omniglot: no Omniglot set under root for the split file {split_path}: "
                f"{_searched(root, 'background')}; same for evaluation"
            )
    by_key: dict[str, _Set] = {}
    for s in sets:
        for key in s.chars:
            by_key.setdefault(key, s)
    missing = sorted({key for _, key, _ in entries if key not in by_key})
    if missing:
        where = ", ".join(s.location for s in sets)
        raise ValueError(
            f"omniglot: the split file {split_path} names {len(missing)} character(s) that are "
            f"not in {where}: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    classes = []
    for _, key, rot in entries:
        for r in (rot,) if rot is not None else rots:
            classes.append((key if r is None else f"{key}/rot{r:03d}", by_key[key], key, r))
    used = sorted({s.name for _, s, _, _ in classes})
    return classes, used


def omniglot_index(
    root: str | os.PathLike[str],
    split: str | os.PathLike[str] = "background",
    rotations: bool = False,
) -> list[tuple[str, list[str]]]:
    """The classes ``omniglot`` would load, without decoding anything: a list of
    ``(class name, image sources)``, the sources being file paths or ``archive.zip:member``.

    >>> import os
    >>> root = os.environ.get("METAROBUST_DATA")
    >>> if root:  # doctest: +SKIP
    ...     print(len(omniglot_index(root, "background", rotations=True)))
    3856
    """
    classes, _ = _resolve(check_path(root, "root"), split, rotations)
    out = []
    for name, s, key, _ in classes:
        prefix = f"{s.archive}:" if s.archive is not None else ""
        out.append((name, [prefix + src for src in s.chars[key]]))
    return out


def _read_members(archive: Path, members: list[str]) -> list[bytes]:
    try:
        with zipfile.ZipFile(archive) as zf:
            return [zf.read(m) for m in members]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"omniglot: cannot read {archive}: {exc}") from exc


def omniglot(
    root: str | os.PathLike[str],
    split: str | os.PathLike[str] = "background",
    image_size: int = 28,
    rotations: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> ImageDataset:
    """Load Omniglot as an :class:`ImageDataset`.

    Args:
        root: folder holding ``images_<set>/`` or ``images_<set>.zip`` (or its parent with
            ``omniglot-py/`` / ``omniglot-official/``), or a zip archive of one set.
        split: ``"background"``, ``"evaluation"``, ``"background_small1"``,
            ``"background_small2"``, or the path of a split file (see the module docstring).
        image_size: side length S of the output images (area-averaged from 105).
        rotations: add the 90/180/270-degree rotations of every character as new classes.
        progress: show a tqdm progress bar while decoding.
        workers: decoder threads (default: the CPU count, at most 4).

    Returns:
        ImageDataset with images ``(N, 1, S, S)`` uint8 (0 = ink, 255 = background),
        labels grouped by class, class names ``"Alphabet/characterNN[/rotDDD]"``.

    Raises:
        FileNotFoundError: ``root``, the set or the split file does not exist.
        ValueError: an empty folder, a character with no images, a corrupt image or archive,
            or a split file naming unknown characters (all named in the message).
    """
    size = check_size(image_size)
    root_p = check_path(root, "root")
    progress = check_bool(progress, "progress")
    workers = None if workers is None else check_int(workers, "workers", 1)
    classes, used = _resolve(root_p, split, rotations)
    sets, items, item_rots, class_items = _decode_plan(classes)
    desc = f"omniglot {'+'.join(used)}"
    base = decode_images(items, size, "L", progress, desc, workers, rotations=item_rots)
    first_row = np.concatenate([[0], np.cumsum([len(r) for r in item_rots])])
    gather = np.array(
        [first_row[i] + item_rots[i].index(rot) for rows, rot in class_items for i in rows],
        dtype=np.int64,
    )
    if np.array_equal(gather, np.arange(len(base))):
        images = base[:, None]
    else:
        images = np.ascontiguousarray(base[gather][:, None])
    counts = [len(rows) for rows, _ in class_items]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    metadata = {
        "source": "omniglot",
        "root": str(root_p),
        "split": str(split),
        "sets": used,
        "image_size": size,
        "rotations": bool(rotations),
        "files": "zip" if any(s.archive is not None for s in sets) else "png",
    }
    return ImageDataset(images, labels, [c[0] for c in classes], metadata)


def _decode_plan(classes: list) -> tuple[list[_Set], list[tuple[str, bytes | None]],
                                         list[list[int]], list[tuple[list[int], int]]]:
    """What to decode for ``classes``: the sets, the items (zip members read here), each
    item's rotations, and each class's item rows with its rotation.

    Each needed image is decoded once; its rotations are made from the full-size decode
    (rotate, then resize: exactly what a rotated source drawing would give)."""
    slot: dict[tuple[int, str], int] = {}
    sets: list[_Set] = []
    items: list[tuple[str, bytes | None]] = []
    item_rots: list[list[int]] = []
    per_archive: dict[int, list[int]] = {}
    class_items: list[tuple[list[int], int]] = []
    for _, s, key, rot in classes:
        if s not in sets:
            sets.append(s)
        sid = sets.index(s)
        rows = []
        for src in s.chars[key]:
            k = (sid, src)
            if k not in slot:
                slot[k] = len(items)
                items.append((src if s.archive is None else f"{s.archive}:{src}", None))
                item_rots.append([])
                if s.archive is not None:
                    per_archive.setdefault(sid, []).append(slot[k])
            if (rot or 0) not in item_rots[slot[k]]:
                item_rots[slot[k]].append(rot or 0)
            rows.append(slot[k])
        class_items.append((rows, rot or 0))
    for sid, idxs in per_archive.items():
        archive = sets[sid].archive
        assert archive is not None
        members = [items[i][0][len(str(archive)) + 1 :] for i in idxs]
        for i, data in zip(idxs, _read_members(archive, members), strict=True):
            items[i] = (items[i][0], data)
    return sets, items, item_rots, class_items
