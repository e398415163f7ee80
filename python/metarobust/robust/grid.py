"""The robustness grid: which families a suite level holds, what their strengths mean, and
the cells (one family at one strength, in one episode setting) that the suite evaluates.

==========================  ================================================================
family                      strength
==========================  ================================================================
``clean``                   0 (no perturbation)
``label_noise_symmetric``   rate: ``floor(rate * ways * shots + 0.5)`` support items of each
``label_noise_paired``      episode, spread evenly over its classes, get a wrong label
``label_noise_outlier``     (symmetric: uniform among the others; paired: ``(c + 1) % ways``)
                            or an image of a class outside the episode (outlier); see
                            :mod:`metarobust.robust.label_noise`. Evaluated at the run's test
                            shots and at 5 shots (``label_noise_shots``). The row's
                            ``effective`` is the fraction corrupted; a rate that corrupts no
                            item at a setting is not evaluated there (listed in ``skipped``).
``gaussian_noise``          standard deviation of additive Gaussian pixel noise, images in
                            [0, 1], clipped to [0, 1]; on the ``corrupt`` set(s)
``corruption:<name>``       severity 1..5 of a corruption of
                            :data:`metarobust.robust.corruptions.CORRUPTIONS`, applied by the
                            Rust sampler to the ``corrupt`` set(s)
``fgsm``                    L-inf radius eps of FGSM on the queries
``pgd``, ``pgd_support``    L-inf radius eps of PGD on the queries (evasion) or on the
                            support set (poisoning): ``pgd_steps`` steps (20) of size
                            ``eps / 4`` (2/255 at eps = 8/255 as in Goldblum et al., 2020,
                            scaled with eps), random start
``certified_l2``            L2 radius r: the fraction of queries that randomized smoothing of
                            the queries (sigma ``certify_sigma``, Cohen et al., 2019) certifies
                            at radius >= r with the right class (abstentions count as wrong);
                            see :mod:`metarobust.robust.certify`. Its rows use the first
                            ``certify_episodes`` episodes (default 100)
``open_set``                unknown fraction f in (0, 1): a fraction f of each episode's queries
                            comes from classes outside the episode; the row's ``accuracy`` is
                            the accuracy on the known queries, ``auroc`` (with ``auroc_ci95``)
                            how well the score in ``setting`` tells known from unknown
                            queries; see :mod:`metarobust.robust.open_set`
``domain_shift:<target>``   0: the learner on another dataset (``glyphs`` test split,
                            ``omniglot`` evaluation split, ``fashion_mnist`` t10k,
                            ``fashion_mnist_inverted``) at the run's test ways (at most the
                            target's classes) and shots; see :mod:`metarobust.data.shift`
==========================  ================================================================

Suite levels (:func:`suite_grid`): ``quick`` (a few cells, 200 episodes; no PGD, whose 20
steps cost about as much as 40 clean cells, nor certification), ``default`` (600 episodes)
and ``full`` (every family and severity, 1000 episodes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..corruption_info import CORRUPT_TARGETS, CORRUPTIONS
from .label_noise import LABEL_NOISE_KINDS, check_rate, corrupted_items
from .open_set import SCORES as OPEN_SET_SCORES

__all__ = [
    "ATTACK_FAMILIES", "CERTIFIED_FAMILY", "CORRUPT_TARGETS", "DOMAIN_TARGETS",
    "LABEL_NOISE_FAMILIES", "OPEN_SET_FAMILY", "SOURCES",
    "SUITES", "SUITE_EPISODES", "Cell", "cells", "check_grid", "domain_targets", "suite_grid",
]

SUITES = ("quick", "default", "full")
SUITE_EPISODES = {"quick": 200, "default": 600, "full": 1000}
LABEL_NOISE_FAMILIES = tuple(f"label_noise_{k}" for k in LABEL_NOISE_KINDS)
ATTACK_FAMILIES = ("fgsm", "pgd", "pgd_support")
CERTIFIED_FAMILY = "certified_l2"
OPEN_SET_FAMILY = "open_set"
DOMAIN_TARGETS = ("glyphs", "omniglot", "fashion_mnist", "fashion_mnist_inverted")
# The datasets a run can be trained on (TrainConfig.dataset, less sinusoid regression).
SOURCES = ("glyphs", "omniglot", "idx", "folder", "cache")
# Families that take no strength: ``clean`` and ``domain_shift:<target>``.
_NO_STRENGTH: tuple[Any, ...] = (None, [], (), [0], [0.0], (0,), (0.0,))


def _eps(*values: float) -> list[float]:
    return [v / 255 for v in values]


def domain_targets(dataset: str, suite: str = "default") -> list[str]:
    """Domain-shift targets of a run trained on ``dataset`` (glyphs -> omniglot; omniglot ->
    glyphs, fashion_mnist (and its inverted copy beyond ``quick``); others -> glyphs,
    omniglot)."""
    if dataset == "glyphs":
        return ["omniglot"]
    if dataset == "omniglot":
        extra = [] if suite == "quick" else ["fashion_mnist_inverted"]
        return ["glyphs", "fashion_mnist", *extra]
    return ["glyphs", "omniglot"]


def suite_grid(suite: str, dataset: str = "glyphs") -> dict[str, list[float]]:
    """The grid ``{family: [strength, ...]}`` of a suite level for a run trained on
    ``dataset`` (which picks the domain-shift targets)."""
    if not isinstance(suite, str) or suite not in SUITES:
        raise ValueError(f"suite: expected one of {', '.join(SUITES)}; got {suite!r}")
    if not isinstance(dataset, str) or dataset not in SOURCES:
        raise ValueError(f"dataset: expected one of {', '.join(SOURCES)} (what the run was "
                         f"trained on); got {dataset!r}")
    shift = {f"domain_shift:{t}": [0.0] for t in domain_targets(dataset, suite)}
    if suite == "quick":
        return {
            "clean": [0.0],
            "label_noise_symmetric": [0.0, 0.4],
            "corruption:gaussian_blur": [3.0],
            "fgsm": _eps(8),
            **shift,
        }
    if suite == "default":
        rates = [0.0, 0.2, 0.4, 0.6, 0.8]
        return {
            "clean": [0.0],
            **{f: rates for f in LABEL_NOISE_FAMILIES},
            "gaussian_noise": [0.1, 0.2, 0.3, 0.5],
            **{f"corruption:{n}": [1.0, 3.0, 5.0] for n in CORRUPTIONS},
            "fgsm": _eps(2, 4, 8, 16),
            "pgd": _eps(2, 8, 16),  # each PGD cell costs about 40 clean cells
            "pgd_support": _eps(8),
            CERTIFIED_FAMILY: [0.0, 0.25, 0.5],
            OPEN_SET_FAMILY: [0.5],
            **shift,
        }
    rates = [round(0.1 * i, 1) for i in range(11)]
    eps = _eps(1, 2, 4, 6, 8, 12, 16)
    return {
        "clean": [0.0],
        **{f: rates for f in LABEL_NOISE_FAMILIES},
        "gaussian_noise": [0.05, 0.1, 0.2, 0.3, 0.4, 0.5],
        **{f"corruption:{n}": [1.0, 2.0, 3.0, 4.0, 5.0] for n in CORRUPTIONS},
        "fgsm": eps,
        "pgd": eps,
        "pgd_support": eps,
        CERTIFIED_FAMILY: [0.0, 0.125, 0.25, 0.375, 0.5],
        OPEN_SET_FAMILY: [0.25, 0.5],
        **shift,
    }


def _known_families() -> str:
    return ", ".join(("clean", *LABEL_NOISE_FAMILIES, "gaussian_noise", "corruption:<name>",
                      *ATTACK_FAMILIES, CERTIFIED_FAMILY, OPEN_SET_FAMILY,
                      "domain_shift:<target>"))


def _check_family(family: Any) -> None:
    """A known family name, or a named error."""
    if not isinstance(family, str):
        raise TypeError(f"grid: family names must be strings, got {family!r}")
    kind, sep, name = family.partition(":")
    if sep and kind == "domain_shift":
        if name not in DOMAIN_TARGETS:
            raise ValueError(f"grid: unknown domain-shift target {name!r} in {family!r}; "
                             f"allowed: {', '.join(DOMAIN_TARGETS)}")
    elif sep and kind == "corruption":
        if name not in CORRUPTIONS:
            raise ValueError(f"grid: unknown corruption {name!r} in {family!r}; allowed: "
                             f"{', '.join(CORRUPTIONS)}")
    elif family not in ("clean", *LABEL_NOISE_FAMILIES, "gaussian_noise", *ATTACK_FAMILIES,
                        CERTIFIED_FAMILY, OPEN_SET_FAMILY):
        raise ValueError(f"grid: unknown family {family!r}; allowed: {_known_families()}")


def _check_strength(family: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"grid[{family!r}]: strengths must be numbers, got {v!r}")
    v = float(v)
    if family in LABEL_NOISE_FAMILIES:
        return check_rate(v, f"grid[{family!r}] rate")
    if family == OPEN_SET_FAMILY:
        if not (math.isfinite(v) and 0 < v < 1):
            raise ValueError(f"grid[{family!r}]: unknown fractions must lie in (0, 1), got "
                             f"{v!r}")
    elif family.startswith("corruption:"):
        if not (math.isfinite(v) and v == int(v)) or not 1 <= v <= 5:
            raise ValueError(f"grid[{family!r}]: severities must be whole numbers 1..5, got "
                             f"{v!r}")
    elif not (math.isfinite(v) and v >= 0):
        raise ValueError(f"grid[{family!r}]: strengths must be finite and >= 0, got {v!r}")
    return v


def check_grid(grid: Any) -> dict[str, list[float]]:
    """A grid ``{family: strengths}`` checked: known families, strengths in range.

    Label-noise rates lie in [0, 1]; open-set unknown fractions in (0, 1); severities are
    whole numbers 1..5; noise std and eps are finite and >= 0; ``clean`` and
    ``domain_shift:*`` take ``[0]`` (or an empty list / None, meaning the same).
    """
    if not isinstance(grid, Mapping) or not grid:
        raise TypeError(f"grid: expected a non-empty mapping {{family: [strength, ...]}}, got "
                        f"{grid!r}")
    out: dict[str, list[float]] = {}
    for family, values in grid.items():
        _check_family(family)
        if family == "clean" or family.startswith("domain_shift:"):
            if values not in _NO_STRENGTH:
                raise ValueError(f"grid[{family!r}]: takes no strength (use [0]), got "
                                 f"{values!r}")
            out[family] = [0.0]
            continue
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError(f"grid[{family!r}]: expected a list of strengths, got {values!r}")
        values = list(values)
        if not values:
            raise ValueError(f"grid[{family!r}]: needs at least one strength")
        out[family] = sorted(dict.fromkeys(_check_strength(family, v) for v in values))
    return out


@dataclass(frozen=True)
class Cell:
    """One evaluation of the suite: a family at a strength, in an episode setting."""

    family: str
    strength: float
    setting: str
    target: str                # "test" or a domain-shift target
    ways: int
    shots: int
    corruption: tuple | None   # (name, severity, corrupt) for the sampler
    perturb: tuple | None      # python-side perturbation, None when the identity
    effective: float = 0.0     # the strength applied (label noise: the fraction corrupted)
    skip: str | None = None    # why the cell is not evaluated (it would change nothing)
    tta: str = "none"          # test-time adaptation (metarobust.robust.tta)

    @property
    def key(self) -> tuple:
        """Cells with the same key have the same result (e.g. rate 0 and clean)."""
        return (self.target, self.ways, self.shots, self.corruption, self.perturb, self.tta)


def setting(ways: int, shots: int, *extra: str) -> str:
    return ", ".join((f"{ways}-way {shots}-shot", *extra))


def _label_noise_cells(family: str, strengths: list[float], ways: int, shots: int,
                       label_noise_shots: tuple[int, ...]) -> list[Cell]:
    kind = family[len("label_noise_"):]
    out = []
    for k_shots in dict.fromkeys((shots, *label_noise_shots)):
        for r in strengths:
            n = corrupted_items(r, ways, k_shots)
            skip = (f"rate {r:g} corrupts none of the {ways * k_shots} support items at "
                    f"{ways}-way {k_shots}-shot" if r > 0 and n == 0 else None)
            out.append(Cell(family, r, setting(ways, k_shots), "test", ways, k_shots, None,
                            ("label_noise", kind, n) if n else None,
                            n / (ways * k_shots), skip))
    return out


def _attack_cells(family: str, strengths: list[float], ways: int, shots: int,
                  pgd_steps: int) -> list[Cell]:
    where = "support" if family == "pgd_support" else "query"
    extra = ("linf", where) if family == "fgsm" else \
        ("linf", f"{pgd_steps} steps of eps/4", where)
    return [Cell(family, eps, setting(ways, shots, *extra), "test", ways, shots, None,
                 (family, eps) if eps > 0 else None, eps) for eps in strengths]


def cells(grid: dict[str, list[float]], ways: int, shots: int,
          label_noise_shots: tuple[int, ...], corrupt: str, pgd_steps: int,
          certify_sigma: float = 0.25) -> list[Cell]:
    """The cells of a checked grid, in its order."""
    out: list[Cell] = []
    w, s = ways, shots
    for family, strengths in grid.items():
        if family == "clean":
            out.append(Cell(family, 0.0, setting(w, s), "test", w, s, None, None))
        elif family in LABEL_NOISE_FAMILIES:
            out += _label_noise_cells(family, strengths, w, s, label_noise_shots)
        elif family == "gaussian_noise":
            out += [Cell(family, std, setting(w, s, corrupt), "test", w, s, None,
                         ("gaussian", std, corrupt) if std > 0 else None, std)
                    for std in strengths]
        elif family.startswith("corruption:"):
            name = family.split(":", 1)[1]
            out += [Cell(family, sev, setting(w, s, corrupt), "test", w, s,
                         (name, int(sev), corrupt), None, sev) for sev in strengths]
        elif family in ATTACK_FAMILIES:
            out += _attack_cells(family, strengths, w, s, pgd_steps)
        elif family == CERTIFIED_FAMILY:
            out += [Cell(family, r, setting(w, s, f"smoothed queries, sigma {certify_sigma:g}"),
                         "test", w, s, None, ("certified", r), r) for r in strengths]
        elif family == OPEN_SET_FAMILY:
            out += [Cell(family, f, setting(w, s, f"score {score}"), "test", w, s, None,
                         ("open_set", f, score), f)
                    for f in strengths for score in OPEN_SET_SCORES]
        else:
            out.append(Cell(family, 0.0, "", family.split(":", 1)[1], w, s, None, None))
    return out


def with_tta(grid_cells: list[Cell], modes: tuple[str, ...]) -> list[Cell]:
    """The cells, then for each test-time adaptation mode but "none" a copy of the clean,
    corruption and domain-shift cells evaluated with it (``, tta MODE`` in the setting)."""
    out = list(grid_cells)
    for mode in modes:
        if mode == "none":
            continue
        out += [dataclasses.replace(c, tta=mode, setting=c.setting and f"{c.setting}, tta {mode}")
                for c in grid_cells
                if c.family == "clean" or c.family.startswith(("corruption:", "domain_shift:"))]
    return out
