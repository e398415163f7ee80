"""Prints the side-by-side ratio tables of the Rust sampler and kernels.

    python benches/compare.py [sampler|kernels|all] [--ways W --shots K --queries Q
                              --batch B --dim D --tasks T --repeats R --min-time S]

Same options as ``metarobust bench``. Real Omniglot is used when ``METAROBUST_DATA`` (or
``--data-root``) holds ``omniglot-npz/images_background.npz``; otherwise synthetic data of
the same shape. The machine and the command are printed first, so the output can be quoted
as is.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from metarobust import bench


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="compare.py")
    sub = parser.add_subparsers(dest="command")
    bench.add_bench_parser(sub)
    args = parser.parse_args(["bench", *argv])
    env = os.environ.get("METAROBUST_DATA")
    cmd = shlex.join(["python", "benches/compare.py", *argv])
    print(f"command: {'METAROBUST_DATA=' + shlex.quote(env) + ' ' if env else ''}{cmd}")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
