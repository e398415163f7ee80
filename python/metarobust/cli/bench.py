"""``metarobust bench``: side-by-side timings of the Rust sampler and kernels against
NumPy/torch references, MAML meta-training against a learn2learn-style reference, and
corrupted against clean sampling, reported as ratios (:mod:`metarobust.bench`).

The benchmark package is imported only when the command runs; the defaults shown here are
those of :mod:`metarobust.bench` (a test keeps them equal)."""

from __future__ import annotations

import argparse
from typing import Any

WHATS = ("sampler", "kernels", "maml", "corruptions", "all")
DEFAULT_BATCH = 64
DEFAULT_MAML_TASKS = 32
DEFAULT_MAML_REPEATS = 3
DEFAULT_REPEATS = 7
DEFAULT_MIN_TIME = 0.1
CORRUPTION_SEVERITY = 3


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="compare the Rust sampler and kernels with NumPy/torch references, "
                      "MAML meta-training with a learn2learn-style reference, and corrupted "
                      "with clean sampling",
        description="Side-by-side timings in one process, reported as ratios.")
    p.add_argument("what", nargs="?", default="all", choices=WHATS, help="what to time")
    p.add_argument("--ways", type=int, default=None,
                   help="classes per episode / task (default: each benchmark's)")
    p.add_argument("--shots", type=int, default=None,
                   help="support items per class (default: each benchmark's)")
    p.add_argument("--queries", type=int, default=None,
                   help="query items per class (default: each benchmark's)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"episodes per sampler batch (default: {DEFAULT_BATCH})")
    p.add_argument("--dim", type=int, default=None,
                   help="embedding dimension (kernels; default: each kernel case's)")
    p.add_argument("--tasks", type=int, default=None,
                   help=f"tasks per kernel call; MAML meta-batch (default: {DEFAULT_MAML_TASKS})")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"interleaved rounds (default: {DEFAULT_REPEATS}; "
                        f"maml {DEFAULT_MAML_REPEATS})")
    p.add_argument("--min-time", type=float, default=DEFAULT_MIN_TIME,
                   help="seconds per timed block of calls")
    p.add_argument("--data-root", default=None,
                   help="folder holding omniglot-npz/ (default: $METAROBUST_DATA)")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="skip the memory, allocation and overhead probes")
    p.add_argument("--device", default="cpu", help="MAML device, e.g. cuda")
    p.add_argument("--severity", type=int, default=CORRUPTION_SEVERITY,
                   help="corruption severity 1..5")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..bench.command import run_cli

    return run_cli(args)
