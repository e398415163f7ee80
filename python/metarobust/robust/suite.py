"""The robustness suite: one trained learner evaluated over a grid of perturbations.

Each *cell* of the grid is a family and a strength; its figure is the mean query accuracy
over the same test episodes (the same sampler seed and episode indices ``0 .. n-1`` in every
cell, so differences between cells are paired) with a 95% confidence interval
(:func:`metarobust.evaluate.mean_ci95`). Families and what their strength means:

==========================  ================================================================
family                      strength
==========================  ================================================================
``clean``                   0 (no perturbation)
``label_noise_symmetric``   rate: ``floor(rate * shots + 0.5)`` support items of each class
``label_noise_paired``      get a wrong label (symmetric: uniform among the others; paired:
``label_noise_outlier``     ``(c + 1) % ways``) or an image of a class outside the episode
                            (outlier); see :mod:`metarobust.robust.label_noise`. Evaluated at
                            the run's test shots and at 5 shots (``label_noise_shots``).
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
``domain_shift:<target>``   0: the learner on another dataset (``glyphs`` test split,
                            ``omniglot`` evaluation split, ``fashion_mnist`` t10k,
                            ``fashion_mnist_inverted``) at the run's test ways (at most the
                            target's classes) and shots
==========================  ================================================================

Fashion-MNIST is light objects on a dark background while Omniglot and the glyphs are dark
ink on white. ``domain_shift:fashion_mnist`` does *not* invert it: the polarity is part of
the shift. ``domain_shift:fashion_mnist_inverted`` (``255 - x``) shows how much of the drop
is polarity alone. Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
(``apt-get install -y dataset-fashion-mnist``, files in ``/usr/share/datasets/fashion-mnist``);
a target whose data is missing is skipped with a warning and listed in ``skipped``.

Determinism: episodes, label noise, Gaussian noise (per episode, seeded by
``(seed, episode index)``), corruptions (the sampler's) and PGD random starts (seeded by
``(seed, first episode of the attack batch)``, with a fixed attack batch size) are functions
of ``seed``; the same seed gives the same rows on the same device.

Suite levels (:func:`suite_grid`): ``quick`` (a few cells, 200 episodes; no PGD, whose 20
steps cost about 40 clean cells), ``default`` (600 episodes) and ``full`` (every family and
severity, 1000 episodes).

>>> rows = run_suite(learner, test_set, ways=5, shots=1, suite="quick")["rows"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._checks import check_int
from ..episodes import EpisodeSampler
from ..evaluate import mean_ci95
from ..learners.protonet import PROTOTYPE_HELP, set_test_prototype
from .label_noise import LABEL_NOISE_KINDS, apply_label_noise, check_rate

__all__ = [
    "ATTACK_FAMILIES", "DOMAIN_TARGETS", "FASHION_MNIST_DIR", "FASHION_MNIST_INSTALL",
    "SUITES", "SUITE_EPISODES", "check_grid", "domain_targets", "run_suite", "suite_grid",
]

SUITES = ("quick", "default", "full")
SUITE_EPISODES = {"quick": 200, "default": 600, "full": 1000}
LABEL_NOISE_FAMILIES = tuple(f"label_noise_{k}" for k in LABEL_NOISE_KINDS)
ATTACK_FAMILIES = ("fgsm", "pgd", "pgd_support")
DOMAIN_TARGETS = ("glyphs", "omniglot", "fashion_mnist", "fashion_mnist_inverted")
# The datasets a run can be trained on (TrainConfig.dataset, less sinusoid regression).
SOURCES = ("glyphs", "omniglot", "idx", "folder")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get install -y dataset-fashion-mnist"
CORRUPT_TARGETS = ("query", "support", "both")
_GAUSSIAN_TAG = 0x474E  # "GN"
_PGD_TAG = 0x5047  # "PG"


def _eps(*values: float) -> list[float]:
    return [v / 255 for v in values]


def _corruption_names() -> tuple[str, ...]:
    from .corruptions import CORRUPTIONS

    return tuple(CORRUPTIONS)


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
    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {', '.join(SUITES)}; got {suite!r}")
    shift = {f"domain_shift:{t}": [0.0] for t in domain_targets(dataset, suite)}
    if suite == "quick":
        return {
            "clean": [0.0],
            "label_noise_symmetric": [0.0, 0.4],
            "corruption:gaussian_blur": [3.0],
            "fgsm": _eps(8),
            **shift,
        }
    names = _corruption_names()
    if suite == "default":
        rates = [0.0, 0.2, 0.4, 0.6, 0.8]
        return {
            "clean": [0.0],
            **{f: rates for f in LABEL_NOISE_FAMILIES},
            "gaussian_noise": [0.1, 0.2, 0.3, 0.5],
            **{f"corruption:{n}": [1.0, 3.0, 5.0] for n in names},
            "fgsm": _eps(2, 4, 8, 16),
            "pgd": _eps(2, 8, 16),  # each PGD cell costs about 40 clean cells
            "pgd_support": _eps(8),
            **shift,
        }
    rates = [round(0.1 * i, 1) for i in range(11)]
    eps = _eps(1, 2, 4, 6, 8, 12, 16)
    return {
        "clean": [0.0],
        **{f: rates for f in LABEL_NOISE_FAMILIES},
        "gaussian_noise": [0.05, 0.1, 0.2, 0.3, 0.4, 0.5],
        **{f"corruption:{n}": [1.0, 2.0, 3.0, 4.0, 5.0] for n in names},
        "fgsm": eps,
        "pgd": eps,
        "pgd_support": eps,
        **shift,
    }


def _known_families() -> str:
    return ", ".join(("clean", *LABEL_NOISE_FAMILIES, "gaussian_noise", "corruption:<name>",
                      *ATTACK_FAMILIES, "domain_shift:<target>"))


def check_grid(grid: Any) -> dict[str, list[float]]:
    """A grid ``{family: strengths}`` checked: known families, strengths in range.

    Label-noise rates lie in [0, 1]; severities are whole numbers 1..5; noise std and eps are
    finite and >= 0; ``clean`` and ``domain_shift:*`` take ``[0]`` (or an empty list / None,
    meaning the same).
    """
    if not isinstance(grid, Mapping) or not grid:
        raise TypeError(f"grid: expected a non-empty mapping {{family: [strength, ...]}}, got "
                        f"{grid!r}")
    out: dict[str, list[float]] = {}
    for family, values in grid.items():
        if not isinstance(family, str):
            raise TypeError(f"grid: family names must be strings, got {family!r}")
        if family == "clean" or family.startswith("domain_shift:"):
            if family.startswith("domain_shift:"):
                target = family.split(":", 1)[1]
                if target not in DOMAIN_TARGETS:
                    raise ValueError(f"grid: unknown domain-shift target {target!r} in "
                                     f"{family!r}; allowed: {', '.join(DOMAIN_TARGETS)}")
            if values not in (None, [], (), [0], [0.0], (0,), (0.0,)):
                raise ValueError(f"grid[{family!r}]: takes no strength (use [0]), got "
                                 f"{values!r}")
            out[family] = [0.0]
            continue
        if family.startswith("corruption:"):
            name = family.split(":", 1)[1]
            names = _corruption_names()
            if name not in names:
                raise ValueError(f"grid: unknown corruption {name!r} in {family!r}; allowed: "
                                 f"{', '.join(names)}")
        elif family not in (*LABEL_NOISE_FAMILIES, "gaussian_noise", *ATTACK_FAMILIES):
            raise ValueError(f"grid: unknown family {family!r}; allowed: {_known_families()}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError(f"grid[{family!r}]: expected a list of strengths, got {values!r}")
        values = list(values)
        if not values:
            raise ValueError(f"grid[{family!r}]: needs at least one strength")
        checked = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"grid[{family!r}]: strengths must be numbers, got {v!r}")
            v = float(v)
            if family in LABEL_NOISE_FAMILIES:
                v = check_rate(v, f"grid[{family!r}] rate")
            elif family.startswith("corruption:"):
                if not (v == int(v) if math.isfinite(v) else False) or not 1 <= v <= 5:
                    raise ValueError(f"grid[{family!r}]: severities must be whole numbers "
                                     f"1..5, got {v!r}")
            elif not (math.isfinite(v) and v >= 0):
                raise ValueError(f"grid[{family!r}]: strengths must be finite and >= 0, got "
                                 f"{v!r}")
            checked.append(v)
        out[family] = sorted(dict.fromkeys(checked))
    return out


@dataclass(frozen=True)
class _Cell:
    family: str
    strength: float
    setting: str
    target: str                # "test" or a domain-shift target
    ways: int
    shots: int
    corruption: tuple | None   # (name, severity, corrupt) for the sampler
    perturb: tuple | None      # python-side perturbation, None when the identity

    @property
    def key(self) -> tuple:
        return (self.target, self.ways, self.shots, self.corruption, self.perturb)


def _seed_from(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


def _gaussian(x: torch.Tensor, std: float, seed: int, part: int, start: int) -> torch.Tensor:
    """``clip(x + std * N(0, 1))`` per episode, the noise drawn on the CPU from a generator
    seeded by ``(seed, part, episode index)``."""
    noise = torch.empty(x.shape, dtype=torch.float32)
    for j in range(x.shape[0]):
        g = torch.Generator().manual_seed(_seed_from(seed, _GAUSSIAN_TAG, part, start + j))
        noise[j] = torch.randn(x.shape[1:], generator=g)
    return (x + std * noise.to(x.device, x.dtype)).clamp(0.0, 1.0)


class _Suite:
    def __init__(self, learner: Any, dataset: Any, *, ways: int, shots: int, queries: int,
                 source: str, image_size: int, seed: int, device: torch.device,
                 data_root: str | os.PathLike | None, fashion_mnist_root: str | os.PathLike,
                 label_noise_shots: tuple[int, ...], corrupt: str, pgd_steps: int,
                 ink: str, batch_size: int, attack_batch_size: int, progress: bool,
                 warn: Callable[[str], None]) -> None:
        self.learner, self.test_set = learner, dataset
        self.ways, self.shots, self.queries = ways, shots, queries
        self.source, self.image_size, self.seed = source, image_size, seed
        self.device, self.data_root, self.fmnist = device, data_root, fashion_mnist_root
        self.label_noise_shots = label_noise_shots
        self.corrupt, self.pgd_steps, self.ink = corrupt, pgd_steps, ink
        self.batch_size, self.attack_batch_size = batch_size, attack_batch_size
        self.progress, self.warn = progress, warn
        self.channels = int(dataset.images.shape[1])
        self._datasets: dict[str, Any] = {}

    # -- domain-shift datasets ---------------------------------------------------------

    def _adapt(self, images: np.ndarray) -> np.ndarray:
        """Images of another dataset in the learner's channels and size."""
        c, size = images.shape[1], self.test_set.images.shape[2:]
        if c != self.channels:
            if c == 1:
                images = np.repeat(images, self.channels, axis=1)
            elif self.channels == 1:
                images = images.mean(axis=1, keepdims=True).round().astype(np.uint8)
            else:
                raise ValueError(f"domain shift: cannot map {c} channels to {self.channels}")
        if tuple(images.shape[2:]) != tuple(size):
            t = torch.from_numpy(np.array(images, dtype=np.float32))
            mode = "area" if t.shape[-1] >= size[-1] else "bilinear"
            kw = {} if mode == "area" else {"align_corners": False}
            t = torch.nn.functional.interpolate(t, size=tuple(size), mode=mode, **kw)
            images = t.round().clamp(0, 255).to(torch.uint8).numpy()
        return np.ascontiguousarray(images)

    def _omniglot_root(self) -> str | None:
        for root in (self.data_root, os.environ.get("METAROBUST_DATA")):
            if root and Path(root).exists():
                return str(root)
        return None

    def dataset(self, target: str) -> tuple[Any, str] | None:
        """``(dataset, description)`` of a target, or None (with a warning) when missing."""
        from .. import data as mrdata

        if target == "test":
            return self.test_set, ""
        if target in self._datasets:
            return self._datasets[target]
        found: tuple[Any, str] | None = None
        if target == "glyphs":
            ds = mrdata.glyphs(num_classes=200, per_class=20, image_size=self.image_size,
                               seed=0, split="test")
            found = (ds.images, ds.labels), "glyphs/test"
        elif target == "omniglot":
            root = self._omniglot_root()
            if root is None:
                self.warn("skipping domain_shift:omniglot: no Omniglot data (pass --data-root "
                          "or set METAROBUST_DATA)")
            else:
                try:
                    ds = mrdata.omniglot(root, split="evaluation", image_size=self.image_size,
                                         progress=False)
                    found = (ds.images, ds.labels), "omniglot/evaluation"
                except (FileNotFoundError, ValueError) as e:
                    self.warn(f"skipping domain_shift:omniglot: no Omniglot evaluation set "
                              f"under {root} ({e})")
        else:
            base = Path(self.fmnist)
            paths = [sorted(base.glob(f"t10k-{k}-idx*")) for k in ("images", "labels")]
            if not all(paths):
                self.warn(f"skipping domain_shift:{target}: no Fashion-MNIST t10k files in "
                          f"{base} (install them with: {FASHION_MNIST_INSTALL})")
            else:
                ds = mrdata.idx(paths[0][0], paths[1][0])
                images = np.asarray(ds.images)
                desc = "fashion_mnist/t10k"
                if target == "fashion_mnist_inverted":
                    images, desc = 255 - images, desc + ", inverted"
                found = (images, np.asarray(ds.labels)), desc
        if found is not None:
            (images, labels), desc = found
            found = (self._adapt(images), np.ascontiguousarray(labels, dtype=np.int64)), desc
        self._datasets[target] = found
        return found

    # -- cells -------------------------------------------------------------------------

    def _setting(self, ways: int, shots: int, *extra: str) -> str:
        return ", ".join((f"{ways}-way {shots}-shot", *extra))

    def cells(self, grid: dict[str, list[float]]) -> list[_Cell]:
        out = []
        w, s = self.ways, self.shots
        for family, strengths in grid.items():
            if family == "clean":
                out.append(_Cell(family, 0.0, self._setting(w, s), "test", w, s, None, None))
            elif family in LABEL_NOISE_FAMILIES:
                kind = family[len("label_noise_"):]
                for shots in dict.fromkeys((s, *self.label_noise_shots)):
                    for r in strengths:
                        k = math.floor(r * shots + 0.5)
                        out.append(_Cell(family, r, self._setting(w, shots), "test", w, shots,
                                         None, ("label_noise", kind, k) if k else None))
            elif family == "gaussian_noise":
                for std in strengths:
                    out.append(_Cell(family, std, self._setting(w, s, self.corrupt), "test",
                                     w, s, None,
                                     ("gaussian", std, self.corrupt) if std > 0 else None))
            elif family.startswith("corruption:"):
                name = family.split(":", 1)[1]
                for sev in strengths:
                    out.append(_Cell(family, sev, self._setting(w, s, self.corrupt), "test",
                                     w, s, (name, int(sev), self.corrupt), None))
            elif family in ATTACK_FAMILIES:
                where = "support" if family == "pgd_support" else "query"
                extra = ("linf", where) if family == "fgsm" else \
                    ("linf", f"{self.pgd_steps} steps of eps/4", where)
                for eps in strengths:
                    out.append(_Cell(family, eps, self._setting(w, s, *extra), "test", w, s,
                                     None, (family, eps) if eps > 0 else None))
            else:
                target = family.split(":", 1)[1]
                out.append(_Cell(family, 0.0, "", target, w, s, None, None))
        return out

    def _transform(self, cell: _Cell, data: Any) -> Callable[[Any, int], Any] | None:
        p = cell.perturb
        if p is None:
            return None
        if p[0] == "label_noise":
            kind, seed = p[1], self.seed

            def noisy(batch: Any, start: int) -> Any:
                return apply_label_noise(batch, kind, cell.strength, seed=seed, start=start,
                                         dataset=data)[0]
            return noisy
        if p[0] == "gaussian":
            std, where = p[1], p[2]

            def gaussian(batch: Any, start: int) -> Any:
                import dataclasses

                parts = {}
                if where in ("support", "both"):
                    parts["support_x"] = _gaussian(batch.support_x, std, self.seed, 0, start)
                if where in ("query", "both"):
                    parts["query_x"] = _gaussian(batch.query_x, std, self.seed, 1, start)
                return dataclasses.replace(batch, **parts)
            return gaussian
        from . import attacks

        family, eps = p

        def attack(batch: Any, start: int) -> Any:
            if family == "fgsm":
                return attacks.fgsm(self.learner, batch, cell.ways, eps, norm="linf",
                                    target="query")
            return attacks.pgd(self.learner, batch, cell.ways, eps=eps, steps=self.pgd_steps,
                               step_size=eps / 4, norm="linf", random_start=True,
                               target="support" if family == "pgd_support" else "query",
                               seed=_seed_from(self.seed, _PGD_TAG, start))
        return attack

    def evaluate(self, cell: _Cell, episodes: int) -> dict[str, Any] | None:
        found = self.dataset(cell.target)
        if found is None:
            return None
        data, desc = found
        ways = cell.ways
        if cell.target != "test":
            ways = min(ways, int(np.unique(data[1]).size))
        kw: dict[str, Any] = {}
        if cell.corruption is not None:
            name, severity, where = cell.corruption
            kw = dict(corruption=name, severity=severity, corrupt=where, ink=self.ink)
        sampler = EpisodeSampler(data, ways=ways, shots=cell.shots, queries=self.queries,
                                 seed=self.seed, dtype="float32", **kw)
        transform = self._transform(cell, data)
        attack = cell.perturb is not None and cell.perturb[0] in ATTACK_FAMILIES
        bs = self.attack_batch_size if attack else self.batch_size
        accs = []
        for start in range(0, episodes, bs):
            batch = sampler.sample_batch(start, min(bs, episodes - start)).to(self.device)
            if transform is not None:
                batch = transform(batch, start)
            acc = self.learner.evaluate_batch(batch, ways)
            accs.append(acc.detach().double().cpu())
        mean, ci = mean_ci95(torch.cat(accs))
        setting = cell.setting or self._setting(ways, cell.shots, desc)
        return {"setting": setting, "accuracy": mean, "ci95": ci}


def run_suite(learner: Any, dataset: Any, *, ways: int, shots: int, queries: int = 15,
              suite: str = "default", grid: Mapping[str, Any] | None = None,
              episodes: int | None = None, seed: int = 1234, device: str | torch.device = "cpu",
              source: str = "glyphs", image_size: int | None = None,
              data_root: str | os.PathLike | None = None,
              fashion_mnist_root: str | os.PathLike = FASHION_MNIST_DIR,
              label_noise_shots: Iterable[int] = (5,), corrupt: str = "query",
              pgd_steps: int = 20, ink: str | None = None, batch_size: int = 50,
              attack_batch_size: int = 10, progress: bool = True,
              warn: Callable[[str], None] | None = None, run: str | None = None,
              ) -> dict[str, Any]:
    """Evaluate ``learner`` over a robustness grid on ``dataset``.

    Args:
        learner: a classification learner (``evaluate_batch(batch, ways)``), e.g.
            ``metarobust.load_run(run_dir)``.
        dataset: the test dataset (ImageDataset or ``(images, labels)``), uint8 images.
        ways, shots, queries: the test episodes (label noise also at ``label_noise_shots``).
        suite: "quick", "default" or "full" (see :func:`suite_grid`); ignored when ``grid``
            is given.
        grid: a custom grid ``{family: [strength, ...]}`` (see :func:`check_grid`).
        episodes: per cell (default: 200 / 600 / 1000 for the suite level, 600 for a grid).
        seed: the episode seed and the seed of every perturbation.
        device: where the learner runs.
        source: the dataset the run was trained on ("glyphs", "omniglot", "idx", "folder"):
            picks the domain-shift targets of a suite level and the ink polarity.
        image_size: the learner's image side (default: the dataset's).
        data_root: Omniglot root for ``domain_shift:omniglot`` (else ``METAROBUST_DATA``).
        fashion_mnist_root: folder of the Fashion-MNIST IDX files.
        label_noise_shots: extra shot settings for the label-noise families.
        corrupt: "query", "support" or "both": the set(s) that ``gaussian_noise`` and the
            corruptions perturb.
        pgd_steps: PGD steps (step size ``eps / 4``).
        ink: "dark" or "light" ink for the corruptions (default: "light" for idx data,
            else "dark").
        batch_size, attack_batch_size: episodes per evaluation batch (attacks: fixed, since
            PGD random starts are seeded per attack batch).
        progress: a tqdm bar over the cells.
        warn: called with each warning line (default: printed to stderr).
        run: a name for the run in the result.

    Returns:
        ``{"run", "suite", "seed", "episodes", "ways", "shots", "queries", "source",
        "rows": [{"family", "setting", "strength", "accuracy", "ci95", "episodes"}, ...],
        "skipped": [{"family", "reason"}], "seconds"}``.
    """
    if grid is None:
        if not isinstance(suite, str) or suite not in SUITES:
            raise ValueError(f"suite: expected one of {', '.join(SUITES)}; got {suite!r}")
        grid = suite_grid(suite, source)
        name = suite
    else:
        name = "custom"
    grid = check_grid(grid)
    if episodes is None:
        episodes = SUITE_EPISODES.get(name, 600)
    episodes = check_int(episodes, "episodes", 1)
    ways = check_int(ways, "ways", 1)
    shots = check_int(shots, "shots", 1)
    queries = check_int(queries, "queries", 1)
    seed = check_int(seed, "seed", 0, 2**64 - 1)
    pgd_steps = check_int(pgd_steps, "pgd_steps", 0)
    batch_size = check_int(batch_size, "batch_size", 1)
    attack_batch_size = check_int(attack_batch_size, "attack_batch_size", 1)
    if not hasattr(label_noise_shots, "__iter__"):
        raise TypeError(f"label_noise_shots: expected a sequence of shot counts, got "
                        f"{label_noise_shots!r}")
    ln_shots = tuple(check_int(s, "label_noise_shots", 1) for s in label_noise_shots)
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {', '.join(SOURCES)}; got {source!r}")
    if corrupt not in CORRUPT_TARGETS:
        raise ValueError(f"corrupt: expected one of {', '.join(CORRUPT_TARGETS)}; got "
                         f"{corrupt!r}")
    if ink is None:
        ink = "light" if source == "idx" else "dark"
    if ink not in ("dark", "light"):
        raise ValueError(f"ink: expected 'dark' or 'light', got {ink!r}")
    if not hasattr(dataset, "images"):
        from ..episodes import _as_arrays

        images, labels = _as_arrays(dataset, None)
        dataset = _Arrays(np.asarray(images), np.asarray(labels))
    if image_size is None:
        image_size = int(dataset.images.shape[-1])
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: {e}") from None
    warnings: list[str] = []

    def _warn(line: str) -> None:
        warnings.append(line)
        (warn or (lambda m: print(f"metarobust: warning: {m}", file=sys.stderr)))(line)

    s = _Suite(learner, dataset, ways=ways, shots=shots, queries=queries, source=source,
               image_size=image_size, seed=seed, device=device, data_root=data_root,
               fashion_mnist_root=fashion_mnist_root, label_noise_shots=ln_shots,
               corrupt=corrupt, pgd_steps=pgd_steps, ink=ink, batch_size=batch_size,
               attack_batch_size=attack_batch_size, progress=progress, warn=_warn)
    cells = s.cells(grid)
    was_training = learner.training
    learner.to(device).eval()
    rows, skipped, memo = [], [], {}
    t0 = time.perf_counter()
    bar = tqdm(cells, desc="robustness", unit="cell", disable=None if progress else True)
    try:
        for cell in bar:
            bar.set_postfix_str(f"{cell.family} {cell.strength:g}")
            if cell.key not in memo:
                memo[cell.key] = s.evaluate(cell, episodes)
            res = memo[cell.key]
            if res is None:
                skipped.append({"family": cell.family, "reason": warnings[-1]})
                continue
            rows.append({"family": cell.family, "setting": cell.setting or res["setting"],
                         "strength": float(cell.strength), "accuracy": res["accuracy"],
                         "ci95": res["ci95"], "episodes": episodes})
    finally:
        bar.close()
        learner.train(was_training)
    return {"run": run, "suite": name, "seed": seed, "episodes": episodes, "ways": ways,
            "shots": shots, "queries": queries, "source": source, "corrupt": corrupt,
            "pgd_steps": pgd_steps, "rows": rows, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 2)}


@dataclass
class _Arrays:
    images: np.ndarray
    labels: np.ndarray


# ---------------------------------------------------------------- the command line

ROBUSTNESS_HELP = """\
Evaluate a trained run over a grid of perturbations and write robustness.json, .csv and
.png (accuracy with 95% CI bands against strength, one panel per family) to --out (default:
the run directory), and a table to stdout; the last stdout line is a JSON object with the
paths. Families: clean; label_noise_symmetric/paired/outlier (strength: rate; at the test
shots and at 5 shots); gaussian_noise (pixel noise std); corruption:<name> (severity 1-5);
fgsm, pgd, pgd_support (L-inf eps; PGD 20 steps of eps/4); domain_shift:<target> (glyphs
runs: omniglot evaluation; omniglot runs: glyphs test, Fashion-MNIST t10k without
inversion, and inverted beyond quick). Every cell uses the same test episodes (same seed).
Levels: quick (a few cells, 200 episodes, no PGD), default (600), full (every family and
severity, 1000). Fashion-MNIST needs: apt-get install -y dataset-fashion-mnist."""


def add_robustness_parser(sub: Any) -> Any:
    """The ``robustness`` subcommand's parser (its ``func`` is set by the caller)."""
    import argparse

    r = sub.add_parser("robustness", help="robustness suite of a run: JSON, CSV and PNG",
                       description=ROBUSTNESS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run_dir", help="a `metarobust train` run directory")
    r.add_argument("--suite", choices=SUITES, default="default",
                   help="grid size: quick | default | full (default: default)")
    r.add_argument("--out", default=None, help="output directory (default: RUN_DIR)")
    r.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR",
                   help="other runs to plot alongside: their robustness.json is used when "
                        "present, otherwise they are evaluated with the same suite and seed "
                        "(and their report written to their own run directory)")
    r.add_argument("--data-root", default=None,
                   help="dataset folder: overrides the run's data_root; also the Omniglot "
                        "root for domain_shift:omniglot (else $METAROBUST_DATA)")
    r.add_argument("--split", default=None,
                   help="test split (default: omniglot evaluation, glyphs test)")
    r.add_argument("--ways", type=int, default=None,
                   help="classes per test episode (default: the run's test ways, at most 5: "
                        "the usual robustness setting, comparable across runs)")
    r.add_argument("--shots", type=int, default=None,
                   help="support items per class (default: the run's test shots)")
    r.add_argument("--queries", type=int, default=None,
                   help="query items per class (default: the run's test queries, else 15)")
    r.add_argument("--prototype", default=None, help=PROTOTYPE_HELP)
    r.add_argument("--episodes", type=int, default=None,
                   help="episodes per cell (default: 200 / 600 / 1000 by suite)")
    r.add_argument("--families", nargs="+", default=None, metavar="FAMILY",
                   help="evaluate only these families, with the strengths of --suite (or of "
                        "default/full when --suite lacks them), e.g. clean pgd "
                        "corruption:rotate domain_shift:omniglot")
    r.add_argument("--corrupt", choices=CORRUPT_TARGETS, default="query",
                   help="images that gaussian_noise and corruptions perturb (default: query)")
    r.add_argument("--pgd-steps", type=int, default=20, help="PGD steps (default: 20)")
    r.add_argument("--fashion-mnist", default=FASHION_MNIST_DIR, metavar="DIR",
                   help=f"Fashion-MNIST IDX folder (default: {FASHION_MNIST_DIR})")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    r.add_argument("--seed", type=int, default=1234,
                   help="seed of the test episodes and perturbations (default: 1234)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return r


def robustness_command(args: Any, load_run: Callable, load_dataset: Callable,
                       resolve_device: Callable) -> int:
    """``metarobust robustness``: ``load_run``, ``load_dataset`` and ``resolve_device`` are
    those of :mod:`metarobust.train` (passed in: robust/ stands above train.py)."""
    import dataclasses
    import json

    from .report import format_table, load_result, write_report

    device = resolve_device(args.device)

    def grid_for(source: str) -> dict[str, list[float]] | None:
        if args.families is None:
            return None
        # strengths of the chosen level, else of the larger ones
        levels = {args.suite: suite_grid(args.suite, source)}
        grid = {}
        for fam in args.families:
            found = [g[fam] for g in levels.values() if fam in g]
            for level in ("default", "full"):
                if not found and level not in levels:
                    levels[level] = suite_grid(level, source)
                    found = [levels[level][fam]] if fam in levels[level] else []
            if not found:
                check_grid({fam: [0.0] if fam.startswith("domain_shift:") else [1.0]})
                raise ValueError(f"families: {fam!r} is not in the suites for {source} runs; "
                                 f"they have {', '.join(levels['full'])}")
            grid[fam] = found[0]
        return grid

    def evaluate_run(run_dir: str) -> dict[str, Any]:
        learner = load_run(run_dir)
        cfg = learner.config
        if cfg.dataset == "sinusoid" or getattr(learner, "task", "") != "classification":
            raise ValueError(f"run_dir: {run_dir} is a {cfg.dataset} regression run; the "
                             "robustness suite needs a classification run")
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        set_test_prototype(learner, args.prototype)
        if args.data_root is not None:
            cfg = dataclasses.replace(cfg, data_root=args.data_root)
        split = args.split or {"glyphs": "test", "omniglot": "evaluation"}.get(cfg.dataset)
        ds = load_dataset(cfg, split, "test")
        def given(name: str, default: int) -> int:
            return default if getattr(args, name) is None else getattr(args, name)

        res = run_suite(learner, ds, ways=given("ways", min(cfg.test_ways, 5)),
                        shots=given("shots", cfg.test_shots),
                        queries=given("queries", cfg.test_queries or 15), suite=args.suite,
                        grid=grid_for(cfg.dataset), episodes=args.episodes, seed=args.seed,
                        device=device, source=cfg.dataset, image_size=cfg.image_size,
                        data_root=args.data_root or (cfg.data_root if cfg.dataset ==
                                                     "omniglot" else None),
                        fashion_mnist_root=args.fashion_mnist, corrupt=args.corrupt,
                        pgd_steps=args.pgd_steps, progress=not args.no_progress,
                        run=str(run_dir))
        res.update(suite=args.suite, families=args.families, learner=cfg.learner,
                   dataset=cfg.dataset, split=split, device=str(device),
                   prototype=getattr(learner, "prototype", None))
        return res

    result = evaluate_run(args.run_dir)
    compared = []
    for other in args.compare:
        p = Path(other)
        if (p / "robustness.json").is_file() or p.is_file():
            res = load_result(p)
            if (res.get("seed"), res.get("episodes")) != (result["seed"], result["episodes"]):
                print(f"metarobust: warning: {other}: its robustness.json has seed "
                      f"{res.get('seed')} and {res.get('episodes')} episodes per cell, not "
                      f"{result['seed']} and {result['episodes']}: rows are not paired",
                      file=sys.stderr)
        elif (p / "config.toml").is_file():
            res = evaluate_run(other)
            write_report(res, p)
        else:
            raise FileNotFoundError(f"compare: {other} holds neither a robustness.json nor a "
                                    "run (config.toml)")
        compared.append(res)
    paths = write_report(result, args.out or args.run_dir, compared)
    print(format_table([result, *compared]))
    for s in result["skipped"]:
        print(f"skipped {s['family']}: {s['reason']}")
    print(json.dumps({"rows": len(result["rows"]), **paths}))
    return 0
