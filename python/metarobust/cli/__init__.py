"""The ``metarobust`` command line, one module per subcommand.

::

    metarobust quickstart                  # the main job on the embedded glyphs
    metarobust train --learner protonet --dataset glyphs --ways 20 --shots 1 --queries 5 \\
        --episodes 20000 --out runs/proto
    metarobust eval runs/proto --ways 5 --shots 1 --episodes 600   # last line: JSON
    metarobust robustness runs/proto --suite quick   # robustness.json, .csv, .png in the run
    metarobust certify runs/proto --sigma 0.25 --out runs/proto/certify   # certified radii
    metarobust data prepare omniglot --root R --split background --out CACHE
    metarobust bench sampler|kernels|maml|all   # side-by-side ratios against references
    metarobust benchmark benchmarks/omniglot_5w1s.toml --out bench-out   # methods compared

Each subcommand module has ``add_parser(subparsers)``, which sets ``func`` on the parsed
arguments, and ``run(args)``, which returns the exit status. The modules import what their
command needs when it runs, so building the parser (and ``--help``) stays light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from . import bench, benchmark, certify, data, eval, quickstart, robustness, train
from ._common import Parser

__all__ = ["build_parser", "main"]

SUBCOMMANDS = (quickstart, train, eval, data, bench, robustness, certify, benchmark)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="metarobust", description="Robust few-shot meta-learning (Rust core, PyTorch).")
    parser.add_argument("--version", action="version", version=f"metarobust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2: bad input, 1: a distributed run
    failed, 130: interrupted)."""
    args = build_parser().parse_args(argv)
    import torch

    from .._runtime import retain_freed_memory
    from ..distributed import DistributedError

    torch.set_num_threads(max(1, torch.get_num_threads()))
    retain_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"metarobust: error: {e}", file=sys.stderr)
        return 2
    except DistributedError as e:  # another rank failed or stalled
        print(f"metarobust: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = ""
        if args.command == "train" and (Path(args.out) / "last.pt").is_file():
            where = (f"; the run's state is in {Path(args.out) / 'last.pt'} (rerun the same "
                     "command to resume)")
        print(f"metarobust: interrupted{where}", file=sys.stderr)
        return 130
