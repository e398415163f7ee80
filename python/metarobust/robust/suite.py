"""The robustness suite: one trained learner evaluated over a grid of perturbations
(:mod:`metarobust.robust.grid` lists the families and what their strengths mean).

Each cell's figure is the mean query accuracy over the same test episodes (the same sampler
seed and episode indices ``0 .. n-1`` in every cell, so differences between cells are
paired) with a 95% confidence interval (:func:`metarobust.evaluate.mean_ci95`). A
domain-shift target whose data is missing is skipped with a warning and listed in
``skipped``.

Determinism: episodes, label noise, Gaussian noise (per episode), corruptions (the
sampler's) and PGD random starts (per attack batch, of a fixed size) come from streams of
``seed`` (:mod:`metarobust.seeds`); the same seed gives the same rows on the same device.

>>> rows = run_suite(learner, test_set, ways=5, shots=1, suite="quick")["rows"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import seeds
from .._checks import check_int
from ..data.shift import FASHION_MNIST_DIR, MissingTarget, fit_images, shift_target
from ..episodes import EpisodeSampler
from ..evaluate import mean_ci95
from . import attacks
from .certify import Smoothing, certify_episode, max_certifiable_radius
from .grid import (
    ATTACK_FAMILIES,
    CERTIFIED_FAMILY,
    CORRUPT_TARGETS,
    OPEN_SET_FAMILY,
    SOURCES,
    SUITE_EPISODES,
    SUITES,
    Cell,
    cells,
    check_grid,
    setting,
    suite_grid,
    with_tta,
)
from .label_noise import apply_label_noise
from .open_set import evaluate_open_set, scores_of
from .tta import TTA_MODES, TTALearner

__all__ = ["run_suite"]


def _gaussian(x: torch.Tensor, std: float, seed: int, part: int, start: int) -> torch.Tensor:
    """``clip(x + std * N(0, 1))`` per episode, the noise drawn on the CPU from the stream
    ``(seed, GAUSSIAN_NOISE, part, episode index)``."""
    noise = torch.empty(x.shape, dtype=torch.float32)
    for j in range(x.shape[0]):
        g = seeds.torch_generator(seed, seeds.GAUSSIAN_NOISE, part, start + j)
        noise[j] = torch.randn(x.shape[1:], generator=g)
    return (x + std * noise.to(x.device, x.dtype)).clamp(0.0, 1.0)


@dataclasses.dataclass
class _Arrays:
    images: np.ndarray
    labels: np.ndarray


@dataclasses.dataclass
class _Suite:
    """The learner, its test set and the checked settings: evaluates cells."""

    learner: Any
    test_set: Any
    ways: int
    shots: int
    queries: int
    source: str
    image_size: int
    seed: int
    device: torch.device
    data_root: str | os.PathLike | None
    fashion_mnist_root: str | os.PathLike
    label_noise_shots: tuple[int, ...]
    corrupt: str
    pgd_steps: int
    ink: str
    batch_size: int
    attack_batch_size: int
    warn: Callable[[str], None]
    smoothing: Smoothing = Smoothing()
    adapted: dict[str, Any] = dataclasses.field(default_factory=dict)  # TTA mode: learner
    _datasets: dict[str, Any] = dataclasses.field(default_factory=dict)
    _certificates: dict[tuple[int, int], list[Any]] = dataclasses.field(default_factory=dict)
    _open_set: dict[tuple, Any] = dataclasses.field(default_factory=dict)

    def open_set(self, cell: Cell, episodes: int) -> dict[str, Any] | None:
        """An ``open_set`` cell: every score of a setting from one pass over the episodes;
        None (with a warning) when the test set has too few classes for the unknowns."""
        _, fraction, score = cell.perturb or ()
        key = (cell.ways, cell.shots, fraction)
        if key not in self._open_set:
            try:
                self._open_set[key] = evaluate_open_set(
                    self.learner, self.test_set, ways=cell.ways, shots=cell.shots,
                    queries=self.queries, unknown_fraction=fraction, episodes=episodes,
                    seed=self.seed, batch_size=self.batch_size, device=self.device)
            except ValueError as e:
                self._open_set[key] = str(e)
        found = self._open_set[key]
        if isinstance(found, str):
            self.warn(f"skipping open_set at {fraction:g}: {found}")
            return None
        return {"setting": cell.setting, **found[score]}

    def smoothing_record(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """``{"smoothing": settings}`` for a result with certified rows, else ``{}``."""
        if any(r["family"] == CERTIFIED_FAMILY for r in rows):
            return {"smoothing": dataclasses.asdict(self.smoothing)}
        return {}

    def certified(self, cell: Cell, episodes: int) -> dict[str, Any] | None:
        """A ``certified_l2`` cell: the queries certified at radius >= the cell's with the
        right class, per episode; the certificates of a setting are computed once."""
        sm, n = self.smoothing, min(episodes, self.smoothing.episodes)
        top = max_certifiable_radius(sm.sigma, sm.samples, sm.alpha)
        if cell.strength >= top:
            self.warn(f"skipping certified_l2 at radius {cell.strength:g}: {sm.samples} samples "
                      f"certify at most {top:.3g} at sigma {sm.sigma:g}, alpha {sm.alpha:g}")
            return None
        key = (cell.ways, cell.shots)
        if key not in self._certificates:
            sampler = EpisodeSampler(self.test_set, ways=cell.ways, shots=cell.shots,
                                     queries=self.queries, seed=self.seed, dtype="float32")
            found = []
            for e in range(n):
                ep = sampler.sample(e)
                classes, radii = certify_episode(
                    self.learner, ep, e, sigma=sm.sigma, samples=sm.samples, n0=sm.n0,
                    alpha=sm.alpha, seed=self.seed, device=self.device)
                found.append((classes == ep.query_y, radii))
            self._certificates[key] = found
        acc = torch.tensor([float((right & (radii >= cell.strength)).double().mean())
                            for right, radii in self._certificates[key]])
        mean, ci = mean_ci95(acc)
        return {"setting": cell.setting, "accuracy": mean, "ci95": ci, "episodes": n,
                "per_episode": acc.tolist()}

    def dataset(self, target: str) -> tuple[Any, str] | None:
        """``((images, labels), description)`` of a target, or None (with a warning) when
        its data is missing."""
        if target == "test":
            return self.test_set, ""
        if target not in self._datasets:
            try:
                images, labels, desc = shift_target(target, self.image_size, self.data_root,
                                                    self.fashion_mnist_root)
            except MissingTarget as e:
                self.warn(f"skipping domain_shift:{target}: {e}")
                self._datasets[target] = None
            else:
                images = fit_images(images, int(self.test_set.images.shape[1]),
                                    tuple(self.test_set.images.shape[2:]))
                labels = np.ascontiguousarray(labels, dtype=np.int64)
                self._datasets[target] = (images, labels), desc
        return self._datasets[target]

    def _transform(self, cell: Cell, data: Any) -> Callable[[Any, int], Any] | None:
        p = cell.perturb
        if p is None:
            return None
        if p[0] == "label_noise":
            kind = p[1]

            def noisy(batch: Any, start: int) -> Any:
                return apply_label_noise(batch, kind, cell.strength, seed=self.seed,
                                         start=start, dataset=data)[0]
            return noisy
        if p[0] == "gaussian":
            std, where = p[1], p[2]

            def gaussian(batch: Any, start: int) -> Any:
                parts = {}
                if where in ("support", "both"):
                    parts["support_x"] = _gaussian(batch.support_x, std, self.seed, 0, start)
                if where in ("query", "both"):
                    parts["query_x"] = _gaussian(batch.query_x, std, self.seed, 1, start)
                return dataclasses.replace(batch, **parts)
            return gaussian
        family, eps = p

        def attack(batch: Any, start: int) -> Any:
            if family == "fgsm":
                return attacks.fgsm(self.learner, batch, cell.ways, eps, norm="linf",
                                    target="query")
            return attacks.pgd(self.learner, batch, cell.ways, eps=eps, steps=self.pgd_steps,
                               step_size=eps / 4, norm="linf", random_start=True,
                               target="support" if family == "pgd_support" else "query",
                               seed=seeds.derive(self.seed, seeds.PGD_START, start))
        return attack

    def evaluate(self, cell: Cell, episodes: int) -> dict[str, Any] | None:
        if cell.perturb is not None and cell.perturb[0] == "certified":
            return self.certified(cell, episodes)
        if cell.family == OPEN_SET_FAMILY:
            return self.open_set(cell, episodes)
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
            acc = self.adapted.get(cell.tta, self.learner).evaluate_batch(batch, ways)
            accs.append(acc.detach().double().cpu())
        per_episode = torch.cat(accs)
        mean, ci = mean_ci95(per_episode)
        tta = (f"tta {cell.tta}",) if cell.tta != "none" else ()
        return {"setting": cell.setting or setting(ways, cell.shots, desc, *tta),
                "accuracy": mean,
                "ci95": ci, "per_episode": per_episode.tolist()}


def _grid(suite: Any, grid: Mapping[str, Any] | None, source: str
          ) -> tuple[str, dict[str, list[float]]]:
    """The suite's name ("custom" for a grid) and its checked grid."""
    if grid is not None:
        return "custom", check_grid(grid)
    if not isinstance(suite, str) or suite not in SUITES:
        raise ValueError(f"suite: expected one of {', '.join(SUITES)}; got {suite!r}")
    return suite, check_grid(suite_grid(suite, source))


def _check_choices(source: Any, corrupt: Any, ink: Any, label_noise_shots: Any
                   ) -> tuple[str, tuple[int, ...]]:
    """The ink (default by source) and the label-noise shots, checked with the others."""
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
    return ink, ln_shots


def _as_dataset(dataset: Any) -> Any:
    if hasattr(dataset, "images"):
        return dataset
    from ..episodes import _as_arrays

    images, labels = _as_arrays(dataset, None)
    return _Arrays(np.asarray(images), np.asarray(labels))


def _check_ints(**values: tuple[Any, int, int | None]) -> list[int]:
    """Each ``name=(value, low, high)`` checked as an int in ``[low, high]``."""
    return [check_int(v, name, low, high) for name, (v, low, high) in values.items()]


def _smoothing(smoothing: Any) -> Smoothing:
    if smoothing is None:
        return Smoothing()
    if not isinstance(smoothing, Smoothing):
        raise TypeError(f"smoothing: expected a metarobust.robust.certify.Smoothing, got "
                        f"{smoothing!r}")
    return smoothing


def _tta(tta: Any, learner: Any) -> dict[str, Any]:
    """``{mode: TTALearner}`` for the modes of ``tta`` other than "none" (named errors)."""
    if isinstance(tta, str) or not isinstance(tta, Iterable):
        raise TypeError(f"tta: expected a tuple of modes ({', '.join(TTA_MODES)}), got "
                        f"{tta!r}")
    modes = tuple(dict.fromkeys(tta))
    for mode in modes:
        if not isinstance(mode, str) or mode not in TTA_MODES:
            raise ValueError(f"tta: expected modes among {', '.join(TTA_MODES)}; got {mode!r}")
    return {m: TTALearner(learner, m) for m in modes if m != "none"}


def _device(device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: {e}") from None


def _recorder(warnings: list[str], warn: Callable[[str], None] | None
              ) -> Callable[[str], None]:
    """Appends each warning to ``warnings`` and passes it on (default: to stderr)."""
    def record(line: str) -> None:
        warnings.append(line)
        if warn is None:
            print(f"metarobust: warning: {line}", file=sys.stderr)
        else:
            warn(line)
    return record


def _evaluate_cells(s: _Suite, todo: list[Cell], episodes: int, progress: bool,
                    warnings: list[str], per_episode: bool = False
                    ) -> tuple[list[dict], list[dict]]:
    """Rows and skipped families; cells with the same key are evaluated once."""
    rows: list[dict] = []
    skipped: list[dict] = []
    memo: dict[tuple, dict[str, Any] | None] = {}
    bar = tqdm(todo, desc="robustness", unit="cell", disable=None if progress else True)
    try:
        for cell in bar:
            bar.set_postfix_str(f"{cell.family} {cell.strength:g}")
            if cell.skip is not None:
                skipped.append({"family": cell.family, "reason": cell.skip})
                continue
            if cell.key not in memo:
                memo[cell.key] = s.evaluate(cell, episodes)
            res = memo[cell.key]
            if res is None:
                skipped.append({"family": cell.family, "reason": warnings[-1]})
                continue
            rows.append({"family": cell.family, "setting": cell.setting or res["setting"],
                         "strength": float(cell.strength),
                         "effective": float(cell.effective), "accuracy": res["accuracy"],
                         "ci95": res["ci95"], "episodes": res.get("episodes", episodes)})
            if "auroc" in res:
                rows[-1].update(auroc=res["auroc"], auroc_ci95=res["auroc_ci95"])
            if per_episode:
                rows[-1]["per_episode"] = res["per_episode"]
                if "auroc" in res:
                    rows[-1]["auroc_per_episode"] = res["auroc_per_episode"]
    finally:
        bar.close()
    return rows, skipped


def _learner_cells(todo: list[Cell], learner: Any) -> list[Cell]:
    """The cells less the open-set scores the learner has not (a MAML's distances)."""
    return [c for c in todo
            if c.family != OPEN_SET_FAMILY or (c.perturb or ())[2] in scores_of(learner)]


def run_suite(learner: Any, dataset: Any, *, ways: int, shots: int, queries: int = 15,
              suite: str = "default", grid: Mapping[str, Any] | None = None,
              episodes: int | None = None, seed: int = 1234, device: str | torch.device = "cpu",
              source: str = "glyphs", image_size: int | None = None,
              data_root: str | os.PathLike | None = None,
              fashion_mnist_root: str | os.PathLike = FASHION_MNIST_DIR,
              label_noise_shots: Iterable[int] = (5,), corrupt: str = "query",
              pgd_steps: int = 20, ink: str | None = None, batch_size: int = 50,
              attack_batch_size: int = 10, smoothing: Smoothing | None = None,
              progress: bool = True, warn: Callable[[str], None] | None = None,
              run: str | None = None, per_episode: bool = False,
              tta: Iterable[str] = ("none",)) -> dict[str, Any]:
    """Evaluate ``learner`` over a robustness grid on ``dataset``.

    Args:
        learner: a classification learner (``evaluate_batch(batch, ways)``), e.g.
            ``metarobust.load_run(run_dir)``.
        dataset: the test dataset (ImageDataset or ``(images, labels)``), uint8 images.
        ways, shots, queries: the test episodes (label noise also at ``label_noise_shots``).
        suite: "quick", "default" or "full" (see :func:`~metarobust.robust.grid.suite_grid`);
            ignored when ``grid`` is given.
        grid: a custom grid ``{family: [strength, ...]}`` (see
            :func:`~metarobust.robust.grid.check_grid`).
        episodes: per cell (default: 200 / 600 / 1000 for the suite level, 600 for a grid).
        seed: the seed of the episodes and of every perturbation; device: the learner's.
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
        smoothing: the ``certified_l2`` settings (a :class:`~.certify.Smoothing`).
        progress: a tqdm bar over the cells.
        warn: called with each warning line (default: printed to stderr).
        run: a name for the run; per_episode: rows hold every episode's accuracy too.
        tta: test-time adaptation modes (:mod:`~.tta`): each but "none" adds the clean,
            corruption and domain-shift rows on the same episodes, setting ", tta MODE".

    Returns:
        ``{"run", "suite", "seed", "episodes", "ways", "shots", "queries", "source",
        "rows": [{"family", "setting", "strength", "effective", "accuracy", "ci95",
        "episodes"}, ...], "skipped": [{"family", "reason"}], "seconds"}``.
    """
    name, grid = _grid(suite, grid, source)
    episodes = check_int(SUITE_EPISODES.get(name, 600) if episodes is None else episodes,
                         "episodes", 1)
    ways, shots, queries, seed, pgd_steps, batch_size, attack_batch_size = _check_ints(
        ways=(ways, 1, None), shots=(shots, 1, None), queries=(queries, 1, None),
        seed=(seed, 0, 2**64 - 1), pgd_steps=(pgd_steps, 0, None),
        batch_size=(batch_size, 1, None), attack_batch_size=(attack_batch_size, 1, None))
    ink, ln_shots = _check_choices(source, corrupt, ink, label_noise_shots)
    dataset = _as_dataset(dataset)
    warnings: list[str] = []
    s = _Suite(learner, dataset, ways=ways, shots=shots, queries=queries, source=source,
               image_size=int(dataset.images.shape[-1]) if image_size is None else image_size,
               seed=seed, device=_device(device), data_root=data_root,
               fashion_mnist_root=fashion_mnist_root, label_noise_shots=ln_shots,
               corrupt=corrupt, pgd_steps=pgd_steps, ink=ink, batch_size=batch_size,
               attack_batch_size=attack_batch_size, warn=_recorder(warnings, warn),
               smoothing=_smoothing(smoothing), adapted=_tta(tta, learner))
    was_training = learner.training
    learner.to(s.device).eval()
    todo = with_tta(_learner_cells(cells(grid, ways, shots, ln_shots, corrupt, pgd_steps,
                                         s.smoothing.sigma), learner), tuple(s.adapted))
    t0 = time.perf_counter()
    try:
        rows, skipped = _evaluate_cells(s, todo, episodes, progress, warnings, per_episode)
    finally:
        learner.train(was_training)
    return {"run": run, "suite": name, "seed": seed, "episodes": episodes, "ways": ways,
            "shots": shots, "queries": queries, "source": source, "corrupt": corrupt,
            "pgd_steps": pgd_steps, "rows": rows, "skipped": skipped, **s.smoothing_record(rows),
            "seconds": round(time.perf_counter() - t0, 2)}
