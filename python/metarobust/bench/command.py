"""The handler of ``metarobust bench`` (its parser is :mod:`metarobust.cli.bench`):
:func:`run_cli` checks the arguments, prints the machine and runs :func:`metarobust.bench.run`.
"""

from __future__ import annotations

import argparse
import math

import torch

from .corruptions import CORRUPTION_SEVERITY
from .report import machine_info
from .runner import run


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
