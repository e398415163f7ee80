"""``metarobust data prepare``: read a dataset once and write its memory-mappable cache
(see :mod:`metarobust.data.dataset`).

::

    metarobust data prepare omniglot --root DATA --split background --out bg28
    metarobust data prepare omniglot --root DATA --split vinyals/train.txt --out tr
    metarobust data prepare folder --root imgs --image-size 84 [--split train.csv] --out f84
    metarobust data prepare idx --images train-images-idx3-ubyte.gz \\
        --labels train-labels-idx1-ubyte.gz --out mnist
    metarobust data prepare mini_imagenet --root MINI --split test --out mini-test
    metarobust data prepare cub --root CUB_200_2011 --split val --crop --out cub-val
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

BENCHMARKS = ("mini_imagenet", "tiered_imagenet", "cifar_fs", "fc100", "cub")
KINDS = ("omniglot", "folder", "idx") + BENCHMARKS


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``data`` command (with its ``prepare`` subcommand); returns the ``data`` parser."""
    data = sub.add_parser("data", help="prepare dataset caches")
    data_sub = data.add_subparsers(dest="data_command", metavar="{prepare}")
    data_sub.required = True
    p = data_sub.add_parser(
        "prepare",
        help="read a dataset once and write a memory-mappable cache directory",
        description="Read a dataset and write a checksummed, memory-mappable cache "
        "(load it with metarobust.data.load(OUT); train, eval and robustness read it with "
        "--data-root OUT, or OUT's parent when OUT is named by split: train, val, test).",
    )
    p.add_argument("kind", choices=KINDS, help="dataset reader")
    p.add_argument("--root", help="omniglot: data root or zip; folder: image tree root")
    p.add_argument(
        "--split",
        help="omniglot: background | evaluation | background_small1 | background_small2 | "
        "split file (default: background); folder: a filename,label CSV; mini_imagenet, "
        "tiered_imagenet, cifar_fs, fc100, cub: train | val | test (default: train)",
    )
    p.add_argument("--image-size", type=int,
                   help="output side length (default: 28 for omniglot; 84 for folder, "
                        "mini_imagenet, tiered_imagenet, cub; 32 for cifar_fs, fc100)")
    p.add_argument("--rotations", action="store_true", help="omniglot: add 90/180/270 classes")
    p.add_argument("--grayscale", action="store_true", help="folder: one channel, not RGB")
    p.add_argument("--crop", action="store_true", help="cub: crop to the bounding boxes")
    p.add_argument("--images", help="idx: the images file (0x00000803, gzip or not)")
    p.add_argument("--labels", help="idx: the labels file (0x00000801, gzip or not)")
    p.add_argument("--workers", type=int, help="decoder threads (default: CPUs, at most 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="the cache directory to write")
    p.set_defaults(func=run, _prepare_parser=p)
    return data


def flag_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of flags for ``args.kind``, or None."""
    if args.kind == "idx":
        if not args.images or not args.labels:
            return "idx needs --images and --labels"
        for flag in ("root", "split", "image_size"):
            if getattr(args, flag) not in (None, False):
                return f"idx does not take --{flag.replace('_', '-')}"
        return None
    if not args.root:
        return f"{args.kind} needs --root"
    if args.images or args.labels:
        return f"{args.kind} does not take --images/--labels"
    if args.kind == "omniglot" and args.grayscale:
        return "omniglot is always grayscale; drop --grayscale"
    if args.kind == "folder" and args.rotations:
        return "--rotations is for omniglot only"
    return _benchmark_flag_error(args)


def _benchmark_flag_error(args: argparse.Namespace) -> str | None:
    if getattr(args, "crop", False) and args.kind != "cub":
        return "--crop is for cub only"
    if args.kind not in BENCHMARKS:
        return None
    for flag in ("rotations", "grayscale"):
        if getattr(args, flag):
            return f"{args.kind} does not take --{flag}"
    if args.split not in (None, "train", "val", "test"):
        return f"{args.kind}: --split must be train, val or test, got {args.split!r}"
    return None


def read(args: argparse.Namespace) -> Any:
    """The dataset that ``args`` describe (flags already checked)."""
    from .. import data

    if args.kind == "idx":
        return data.idx(args.images, args.labels)
    size = args.image_size if args.image_size is not None else data.IMAGE_SIZES[args.kind]
    progress = not args.no_progress
    if args.kind in BENCHMARKS:
        return _benchmark(args, size, progress)
    if args.kind == "omniglot":
        return data.omniglot(args.root, split=args.split or "background", image_size=size,
                             rotations=args.rotations, progress=progress,
                             workers=args.workers)
    return data.image_folder(args.root, image_size=size, grayscale=args.grayscale,
                             split_csv=args.split, progress=progress, workers=args.workers)


def _benchmark(args: argparse.Namespace, size: int, progress: bool) -> Any:
    from .. import data

    split = args.split or "train"
    if args.kind in ("cifar_fs", "fc100"):
        return getattr(data, args.kind)(args.root, split, image_size=size)
    extra = {"crop": args.crop} if args.kind == "cub" else {}
    return getattr(data, args.kind)(args.root, split, image_size=size, progress=progress,
                                    workers=args.workers, **extra)


def run(args: argparse.Namespace) -> int:
    """Loads, saves the cache, prints one summary line; a bad flag combination exits with
    status 2 and the usage line."""
    error = flag_error(args)
    if error is not None:
        parser: argparse.ArgumentParser | None = getattr(args, "_prepare_parser", None)
        if parser is not None:
            parser.error(error)
        raise ValueError(error)
    t0 = time.perf_counter()
    ds = read(args)
    t1 = time.perf_counter()
    ds.save(args.out)
    t2 = time.perf_counter()
    c, h, w = ds.image_shape
    print(f"wrote {args.out}: {len(ds)} images of {c}x{h}x{w}, {ds.num_classes} classes "
          f"(read {t1 - t0:.1f} s, write {t2 - t1:.1f} s)", file=sys.stdout)
    return 0
