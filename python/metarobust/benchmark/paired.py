"""Paired comparisons of methods evaluated on the same episodes.

Two methods' per-episode accuracies on the same episodes (same seed, same positions) are
compared through their per-episode differences: the mean difference with a 95% confidence
interval, ``1.96 * sd / sqrt(n)`` (normal approximation over episodes, as
:func:`metarobust.evaluate.mean_ci95`). Pairing removes the episode-to-episode variation
both methods share, so the interval of a difference is usually much narrower than the two
accuracies' intervals suggest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..evaluate import mean_ci95

__all__ = ["paired_difference", "paired_rows", "significant_best"]


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean of ``a[i] - b[i]`` and its 95% half-width; ``a`` and ``b`` are per-episode
    values of the same episodes."""
    if len(a) != len(b):
        raise ValueError(f"per-episode values: {len(a)} and {len(b)} episodes; a paired "
                         "difference needs the same episodes")
    d = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    return mean_ci95(d)


def significant_best(per_episode: Mapping[str, Sequence[float]]) -> str | None:
    """The method with the highest mean whose paired lead over every other method is
    significant (the lower end of each difference's 95% interval above 0), else None."""
    if len(per_episode) < 2:
        return None
    means = {k: sum(v) / len(v) for k, v in per_episode.items()}
    best = max(means, key=lambda k: means[k])
    for other, values in per_episode.items():
        if other == best:
            continue
        diff, ci = paired_difference(per_episode[best], values)
        if not diff - ci > 0:
            return None
    return best


def paired_rows(per_method: Mapping[str, Sequence[dict[str, Any]]], reference: str
                ) -> list[dict[str, Any]]:
    """The benchmark's rows: for each setting (family, setting, strength, in order of
    appearance) one row per method with its accuracy and 95% CI, its paired difference
    from ``reference`` (``diff``, ``diff_ci95``; None for the reference itself) and ``best``
    (the method's lead over every other is significant). ``per_method`` maps a method to
    its suite rows, each with ``per_episode`` accuracies."""
    order: list[tuple[str, str, float]] = []
    cells: dict[tuple[str, str, float], dict[str, dict[str, Any]]] = {}
    for method, rows in per_method.items():
        for r in rows:
            key = (r["family"], r["setting"], float(r["strength"]))
            if key not in cells:
                order.append(key)
                cells[key] = {}
            cells[key][method] = r
    out = []
    for key in order:
        cell = cells[key]
        best = significant_best({m: r["per_episode"] for m, r in cell.items()})
        ref = cell.get(reference)
        for method, r in cell.items():
            diff = ci = None
            if ref is not None and method != reference:
                diff, ci = paired_difference(r["per_episode"], ref["per_episode"])
            out.append({"method": method, "family": r["family"], "setting": r["setting"],
                        "strength": float(r["strength"]),
                        "effective": float(r.get("effective", r["strength"])),
                        "accuracy": r["accuracy"], "ci95": r["ci95"],
                        "episodes": len(r["per_episode"]), "diff": diff, "diff_ci95": ci,
                        "best": method == best})
    return out
