"""The files of ``metarobust certify``: ``certify.json`` (the result of
:func:`metarobust.robust.certify.certify`) and ``certify.png`` (certified accuracy against
the L2 radius: the curve over every query's radius, the reported radii with their 95% CI,
the base classifier's clean accuracy)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import replace_file

__all__ = ["certified_curve", "plot_certified", "write_certify"]


def certified_curve(result: dict[str, Any], points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(radii, accuracy)``: the fraction of all queries classified right and certified at
    least at each radius, from 0 to the largest radius reached (pooled over episodes, which
    all have the same number of queries)."""
    queries = result["queries"]
    right = np.array([q["radius"] for q in queries
                      if q["class"] == q["label"] and q["radius"] is not None], dtype=np.float64)
    top = max(float(right.max()) if right.size else 0.0,
              max(r["radius"] for r in result["radii"]), 1e-6)
    grid = np.linspace(0.0, top * 1.05, points)
    return grid, (right[None, :] >= grid[:, None]).sum(1) / max(1, len(queries))


def plot_certified(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Writes the PNG of a certification result."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    grid, acc = certified_curve(result)
    ax.plot(grid, acc, color="C0", lw=1.6, label="certified accuracy (all queries)")
    radii = [r["radius"] for r in result["radii"]]
    ax.errorbar(radii, [r["certified_accuracy"] for r in result["radii"]],
                yerr=[r["ci95"] for r in result["radii"]], fmt="o", color="C0", ms=4,
                capsize=3, label="reported radii (95% CI over episodes)")
    ax.axhline(result["clean_accuracy"], color="0.3", ls=":", lw=1.2,
               label="base classifier, clean queries")
    ax.axhline(1.0 / result["ways"], color="0.55", ls="-.", lw=0.9, label="chance")
    if "max_certifiable_radius" in result:
        ax.axvline(result["max_certifiable_radius"], color="C3", ls="--", lw=1.0,
                   label=f"largest radius {result['samples']} samples can certify")
    ax.set_xlabel("L2 radius (images in [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Randomized smoothing, sigma {result['sigma']:g}: {result['ways']}-way "
                 f"{result['shots']}-shot, {result['episodes']} episodes\nn = "
                 f"{result['samples']}, alpha = {result['alpha']:g}, abstained "
                 f"{100 * result['abstention']:.1f}% of queries", fontsize=10)
    ax.legend(fontsize=8, loc="center right", frameon=True, framealpha=0.9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out = Path(path)
    replace_file(out, buf.getvalue())
    return out


def write_certify(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Writes ``certify.json`` and ``certify.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "certify.json", "png": out / "certify.png"}
    replace_file(paths["json"], (json.dumps(result, indent=1) + "\n").encode())
    plot_certified(result, paths["png"])
    return {k: str(v) for k, v in paths.items()}
