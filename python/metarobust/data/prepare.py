"""``metarobust data prepare``: build a dataset cache (see :mod:`metarobust.data.dataset`).

::

    metarobust data prepare omniglot --root DATA --split background --out bg28
    metarobust data prepare omniglot --root DATA --split vinyals/train.txt --out tr
    metarobust data prepare folder --root imgs --image-size 84 [--split train.csv] --out f84
    metarobust data prepare idx --images train-images-idx3-ubyte.gz \\
        --labels train-labels-idx1-ubyte.gz --out mnist

``cli.py`` calls :func:`add_data_parser` on its sub-command parsers; the parsed arguments
carry ``func``, which runs the command and returns the exit status.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="metarobust")
>>> _ = add_data_parser(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["data", "prepare", "idx", "--images", "i", "--labels", "l",
...                           "--out", "o"])
>>> args.kind, args.func.__name__
('idx', 'run_prepare')
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["add_data_parser", "run_prepare"]

_DEFAULT_SIZE = {"omniglot": 28, "folder": 84}


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``data`` command (with its ``prepare`` sub-command) to ``subparsers``, the
    object returned by ``ArgumentParser.add_subparsers()``. Returns the ``data`` parser."""
    data = subparsers.add_parser("data", help="prepare dataset caches")
    data_sub = data.add_subparsers(dest="data_command", metavar="{prepare}")
    data_sub.required = True
    p = data_sub.add_parser(
        "prepare",
        help="read a dataset once and write a memory-mappable cache directory",
        description="Read a dataset and write a checksummed, memory-mappable cache "
        "(load it with metarobust.data.load(OUT)).",
    )
    p.add_argument("kind", choices=["omniglot", "folder", "idx"], help="dataset reader")
    p.add_argument("--root", help="omniglot: data root or zip; folder: image tree root")
    p.add_argument(
        "--split",
        help="omniglot: background | evaluation | background_small1 | background_small2 | "
        "split file (default background); folder: a filename,label CSV",
    )
    p.add_argument("--image-size", type=int, help="output side length (omniglot 28, folder 84)")
    p.add_argument("--rotations", action="store_true", help="omniglot: add 90/180/270 classes")
    p.add_argument("--grayscale", action="store_true", help="folder: one channel, not RGB")
    p.add_argument("--images", help="idx: the images file (0x00000803, gzip or not)")
    p.add_argument("--labels", help="idx: the labels file (0x00000801, gzip or not)")
    p.add_argument("--workers", type=int, help="decoder threads (default: CPUs, at most 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="the cache directory to write")
    p.set_defaults(func=run_prepare, _prepare_parser=p)
    return data


def _build(args: argparse.Namespace):
    from .idx import idx
    from .image_folder import image_folder
    from .omniglot import omniglot

    parser: argparse.ArgumentParser | None = getattr(args, "_prepare_parser", None)

    def fail(msg: str):
        if parser is not None:
            parser.error(msg)  # exits with status 2 and the usage line
        raise ValueError(msg)

    progress = not args.no_progress
    size = args.image_size if args.image_size is not None else _DEFAULT_SIZE.get(args.kind)
    if args.kind == "idx":
        if not args.images or not args.labels:
            fail("idx needs --images and --labels")
        for flag in ("root", "split", "image_size"):
            if getattr(args, flag) not in (None, False):
                fail(f"idx does not take --{flag.replace('_', '-')}")
        return idx(args.images, args.labels)
    if not args.root:
        fail(f"{args.kind} needs --root")
    if args.images or args.labels:
        fail(f"{args.kind} does not take --images/--labels")
    if args.kind == "omniglot":
        if args.grayscale:
            fail("omniglot is always grayscale; drop --grayscale")
        return omniglot(
            args.root,
            split=args.split or "background",
            image_size=size,
            rotations=args.rotations,
            progress=progress,
            workers=args.workers,
        )
    if args.rotations:
        fail("--rotations is for omniglot only")
    return image_folder(
        args.root,
        image_size=size,
        grayscale=args.grayscale,
        split_csv=args.split,
        progress=progress,
        workers=args.workers,
    )


def run_prepare(args: argparse.Namespace) -> int:
    """Handler of ``metarobust data prepare``: load, save the cache, print one summary line."""
    t0 = time.perf_counter()
    ds = _build(args)
    t1 = time.perf_counter()
    ds.save(args.out)
    t2 = time.perf_counter()
    c, h, w = ds.image_shape
    print(
        f"wrote {args.out}: {len(ds)} images of {c}x{h}x{w}, {ds.num_classes} classes "
        f"(read {t1 - t0:.1f} s, write {t2 - t1:.1f} s)",
        file=sys.stdout,
    )
    return 0
