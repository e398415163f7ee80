"""Reporting: aligned text tables, the machine the figures come from, and the targets the
ratios are held to.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import _core
from .corruptions import CORRUPTION_SETTING
from .kernels import DEFAULT_KERNEL_SHAPES, SMALL_KERNEL_SHAPE, _shape_str, kernel_summary
from .maml import maml_summary
from .sampler import DEFAULT_BATCH, _setting, sampler_summary

# Targets on a 2-core machine (see benches/compare.py).
TARGETS = {
    "sampler_vs_numpy": 3.0,          # every setting, same output dtype
    "sampler_vs_dataloader": 50.0,    # 5w1s15q, batch 64
    "sampler_pct_memcpy": 40.0,       # 5w1s15q, batch 64
    "kernel_small": 3.0,              # (32, 5, 5, 75, 64), fwd and fwd+bwd
    "kernel_large": 1.0,              # the other shapes
    "maml_vs_reference": 1.3,         # second order, path auto vs learn2learn-style, CPU
    "corrupted_vs_clean": 2.0,        # at most: corrupted / clean sampling time, 5w1s15q
}


def _fmt(v: Any) -> str:
    """A table cell: floats to about 3-4 significant digits, NaN as ``-``."""
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 10:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def print_table(rows: list[dict], title: str | None = None, file: Any = None) -> None:
    """Rows (dicts with the same keys) as an aligned text table: numeric columns
    right-aligned, others left-aligned."""
    file = file or sys.stdout
    if title:
        print(f"\n{title}", file=file)
    if not rows:
        print("(no rows)", file=file)
        return
    cols = list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    width = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in cols]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, width, numeric, strict=True)).rstrip()

    print(line(cols), file=file)
    print("  ".join("-" * w for w in width), file=file)
    for row in cells:
        print(line(row), file=file)
    file.flush()


def machine_info() -> dict:
    """CPU model, cores, thread counts and versions: printed above every table, so that the
    output can be quoted as is."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model, "cores": os.cpu_count(), "usable cores": usable,
        "torch threads": torch.get_num_threads(), "rayon threads": _core.num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "metarobust": _core.__version__,
    }


# ---------------------------------------------------------------- targets

def _target(what: str, value: float, goal: float, at_most: bool = False) -> dict:
    met = value <= goal if at_most else value >= goal
    return {"target": what, "measured": value, "goal": goal, "met": "yes" if met else "NO"}


def _sampler_targets(rows: list[dict]) -> list[dict]:
    """Rust/NumPy at every setting, Rust/DataLoader and % of memcpy at 5w1s15q; batch 64."""
    out = []
    batch64 = [r for r in rows if r["batch"] == DEFAULT_BATCH]
    for r in sampler_summary(batch64):
        tag = f"sampler {r['setting']} {r['dtype']}"
        out.append(_target(f"{tag}: rust/numpy", r["rust/numpy"],
                           TARGETS["sampler_vs_numpy"]))
        if r["setting"] == "5w1s15q":
            out.append(_target(f"{tag}: rust/dataloader", r["rust/dataloader"],
                               TARGETS["sampler_vs_dataloader"]))
            out.append(_target(f"{tag}: rust % memcpy", r["rust % memcpy"],
                               TARGETS["sampler_pct_memcpy"]))
    return out


def _kernel_targets(rows: list[dict]) -> list[dict]:
    """Rust over the best torch candidate, at the default shapes only."""
    out = []
    known = {_shape_str(v) for v in DEFAULT_KERNEL_SHAPES}
    for r in kernel_summary(rows):
        shape = r["shape (B,N,K,Q,D)"]
        if shape not in known:
            continue
        small = shape == _shape_str(SMALL_KERNEL_SHAPE)
        out.append(_target(f"kernels {shape} {r['mode']}: rust/best torch", r["rust speedup"],
                           TARGETS["kernel_small" if small else "kernel_large"]))
    return out


def _maml_targets(rows: list[dict], device: str) -> list[dict]:
    """Second order, the default path over the reference; on the CPU only."""
    if torch.device(device).type != "cpu":
        return []
    return [_target(f"maml second order, {r['tasks']} tasks: auto ({r['auto path']}) / "
                    "reference", r["auto/reference"], TARGETS["maml_vs_reference"])
            for r in maml_summary(rows) if r["order"] == "second"]


def _corruption_targets(rows: list[dict]) -> list[dict]:
    """Corrupted over clean (at most), default setting and batch, the sampler's default
    cache."""
    return [_target(f"corruption {r['corruption']} (severity {r['severity']}) {r['dtype']}: "
                    "corrupted/clean (at most)", r["x clean"], TARGETS["corrupted_vs_clean"],
                    at_most=True)
            for r in rows
            if r["corruption"] != "clean" and r.get("cache") != "off"
            and r["batch"] == DEFAULT_BATCH and r["setting"] == _setting(*CORRUPTION_SETTING)]


def check_targets(sampler_rows: list[dict] | None = None,
                  kernel_rows: list[dict] | None = None,
                  maml_rows: list[dict] | None = None, device: str = "cpu",
                  corruption_rows: list[dict] | None = None) -> list[dict]:
    """Each target of :data:`TARGETS` that the rows cover: measured ratio, goal, met.
    The MAML target (second order, default path / reference) applies on the CPU only; the
    corruption target is an upper bound, on the default setting and batch."""
    return [*_sampler_targets(sampler_rows or []), *_kernel_targets(kernel_rows or []),
            *_maml_targets(maml_rows or [], device),
            *_corruption_targets(corruption_rows or [])]
