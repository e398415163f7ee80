"""Prints the side-by-side ratio tables of the Rust sampler and kernels, and of MAML
meta-training against a learn2learn-style reference.

    python benches/compare.py [sampler|kernels|maml|all] [--ways W --shots K --queries Q
                              --batch B --dim D --tasks T --repeats R --min-time S
                              --device D]

Same options as ``metarobust bench``. ``maml``: second- and first-order MAML meta-training
steps (Conv-4 of Finn et al., 5-way 1-shot 15-query, meta-batch ``--tasks``, default 32),
metarobust's loop and vmap paths and the reference, tasks/s (best of ``--repeats``
interleaved rounds, default 3) and peak memory (one fresh subprocess per candidate), on
``--device`` (default cpu); about two minutes on 2 cores. Real Omniglot is used when
``METAROBUST_DATA`` (or ``--data-root``) holds ``omniglot-npz/images_background.npz``;
otherwise synthetic data of the same shape. The machine and the command are printed
first, so the output can be quoted as is.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from metarobust.cli.bench import add_parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="compare.py")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["bench", *argv])
    env = os.environ.get("METAROBUST_DATA")
    cmd = shlex.join(["python", "benches/compare.py", *argv])
    print(f"command: {'METAROBUST_DATA=' + shlex.quote(env) + ' ' if env else ''}{cmd}")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
