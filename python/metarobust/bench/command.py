"""``metarobust bench``: the argparse front end of :func:`metarobust.bench.run`.

:func:`add_bench_parser` adds the subcommand with :func:`run_cli` as its handler
(``args.func``), the one function the command line calls.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from .corruptions import CORRUPTION_SEVERITY
from .maml import DEFAULT_MAML_REPEATS, DEFAULT_MAML_TASKS
from .report import machine_info
from .runner import WHATS, run
from .sampler import DEFAULT_BATCH
from .timing import DEFAULT_MIN_TIME, DEFAULT_REPEATS


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``bench sampler|kernels|maml|corruptions|all [--ways --shots --queries --batch
    --dim --tasks --repeats --device --severity]`` to an argparse subparsers object;
    ``args.func(args)`` runs it."""
    p = subparsers.add_parser(
        "bench", help="compare the Rust sampler and kernels with NumPy/torch references, "
                      "MAML meta-training with a learn2learn-style reference, and corrupted "
                      "with clean sampling",
        description="Side-by-side timings in one process, reported as ratios.")
    p.add_argument("what", nargs="?", default="all", choices=WHATS)
    p.add_argument("--ways", type=int, default=None, help="classes per episode / task")
    p.add_argument("--shots", type=int, default=None, help="support items per class")
    p.add_argument("--queries", type=int, default=None, help="query items per class")
    p.add_argument("--batch", type=int, default=None,
                   help=f"episodes per sampler batch (default {DEFAULT_BATCH})")
    p.add_argument("--dim", type=int, default=None, help="embedding dimension (kernels)")
    p.add_argument("--tasks", type=int, default=None,
                   help=f"tasks per kernel call; MAML meta-batch (default {DEFAULT_MAML_TASKS})")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"interleaved rounds (default {DEFAULT_REPEATS}; "
                        f"maml {DEFAULT_MAML_REPEATS})")
    p.add_argument("--min-time", type=float, default=DEFAULT_MIN_TIME,
                   help=f"seconds per timed block of calls (default {DEFAULT_MIN_TIME})")
    p.add_argument("--data-root", default=None,
                   help="folder holding omniglot-npz/ (default $METAROBUST_DATA)")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="skip the memory, allocation and overhead probes")
    p.add_argument("--device", default="cpu", help="MAML device (default cpu; e.g. cuda)")
    p.add_argument("--severity", type=int, default=CORRUPTION_SEVERITY,
                   help=f"corruption severity 1..5 (default {CORRUPTION_SEVERITY})")
    p.set_defaults(func=run_cli)
    return p


def _check_args(args: argparse.Namespace) -> None:
    """ValueError naming the first bad size, time or severity."""
    for name in ("ways", "shots", "batch", "dim", "tasks", "repeats"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ValueError(f"{name}: must be >= 1, got {v}")
    if args.queries is not None and args.queries < 0:
        raise ValueError(f"queries: must be >= 0, got {args.queries}")
    if not 0 < args.min_time < math.inf:
        raise ValueError(f"min_time: must be finite and > 0 (seconds), got {args.min_time}")
    severity = getattr(args, "severity", CORRUPTION_SEVERITY)
    if not 1 <= severity <= 5:
        raise ValueError(f"severity: must be in 1..5, got {severity}")


def _check_device(device: str) -> None:
    """ValueError unless ``device`` names a torch device that is available."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA is not available")


def run_cli(args: argparse.Namespace) -> int:
    """``metarobust bench``; bad arguments raise ValueError naming them (the command line
    prints it as ``metarobust: error: ...`` and exits with 2)."""
    _check_args(args)
    device = getattr(args, "device", "cpu")
    _check_device(device)
    for k, v in machine_info().items():
        print(f"{k}: {v}")
    run(args.what, ways=args.ways, shots=args.shots, queries=args.queries, batch=args.batch,
        dim=args.dim, tasks=args.tasks, repeats=args.repeats, min_time=args.min_time,
        data_root=args.data_root, diagnostics=not args.no_diagnostics, device=device,
        severity=getattr(args, "severity", CORRUPTION_SEVERITY))
    return 0
