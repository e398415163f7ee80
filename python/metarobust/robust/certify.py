"""Certified robustness by randomized smoothing (Cohen, Rosenfeld and Kolter, 2019), for
few-shot classifiers: the query is smoothed, the support set stays as given.

For one episode, a learner adapted to the support set is a base classifier ``f`` of a query
image. Its smoothed classifier ``g(x) = argmax_c P(f(clip(x + d)) = c)``, ``d ~ N(0, sigma^2 I)``,
is robust: if class ``A`` has probability at least ``p_A > 1/2`` under the noise, ``g``
returns ``A`` for every ``x'`` with ``||x' - x||_2 < sigma * Phi^-1(p_A)``. Clipping the noisy
image to [0, 1] is part of the base classifier (the learners take images in [0, 1]), so the
guarantee is unchanged.

:func:`certify_queries` is Cohen et al.'s CERTIFY: ``n0`` noisy copies choose the class,
``n`` fresh copies bound its probability from below (one-sided Clopper-Pearson at level
``1 - alpha``); below 1/2 the query abstains. With probability at least ``1 - alpha`` (per
query) a returned class and radius are correct for ``g``.

:func:`certify` runs it over test episodes and reports, per radius ``r``, the certified
accuracy (the fraction of queries whose class is right and certified at radius at least
``r``; abstentions count as wrong) with its 95% CI over episodes, the abstention rate and
every query's radius. Noise comes from ``seeds.torch_generator(seed, CERTIFY, episode)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import seeds
from .._checks import check_bool, check_int, check_real
from ..evaluate import mean_ci95
from ..learners.base import replace_fields

__all__ = ["DEFAULT_RADII", "Smoothing", "certify", "certify_queries", "certify_episode",
           "clopper_pearson_lower", "episode_classifier", "max_certifiable_radius", "noisy_images",
           "smoothed_counts"]

DEFAULT_RADII = (0.0, 0.125, 0.25, 0.375, 0.5)


@dataclasses.dataclass(frozen=True)
class Smoothing:
    """The certification settings of the robustness suite's ``certified_l2`` family: noise
    ``sigma``, ``n0`` and ``samples`` noisy copies per query, failure probability ``alpha``,
    and the number of episodes certified (the suite's first ``episodes``, at most)."""

    sigma: float = 0.25
    samples: int = 500
    n0: int = 50
    alpha: float = 0.001
    episodes: int = 100

    def __post_init__(self) -> None:
        _check_args(self.sigma, self.samples, self.n0, self.alpha, self.episodes, [0.0], 1)
DEFAULT_BATCH = 1000  # noisy images per classifier call


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """The one-sided ``1 - alpha`` Clopper-Pearson lower bound of a binomial proportion: the
    ``alpha`` quantile of Beta(successes, trials - successes + 1), 0 when ``successes`` is
    0 (the ``p`` at which P(X >= successes) = alpha for X ~ Binomial(trials, p))."""
    from scipy.stats import beta

    # scipy's quantile keeps the tail within 1e-6 of alpha up to 1e8 trials (1e-5 at 4e9)
    trials = check_int(trials, "trials", 1, 10**8)
    successes = check_int(successes, "successes", 0)
    if successes > trials:
        raise ValueError(f"successes: {successes} is more than trials ({trials})")
    alpha = check_real(alpha, "alpha", 0.0, 1.0, low_open=True, high_open=True)
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def max_certifiable_radius(sigma: float, samples: int, alpha: float) -> float:
    """The largest radius ``samples`` noisy copies can certify, when every copy gives the
    class: ``sigma * Phi^-1(alpha ** (1 / samples))``. Beyond it no query is certified,
    whatever the classifier (0.55 at sigma 0.25, 500 samples, alpha 0.001)."""
    bound = clopper_pearson_lower(samples, samples, alpha)
    normal = torch.distributions.Normal(0.0, 1.0)
    return sigma * float(normal.icdf(torch.tensor(bound, dtype=torch.float64)))


def smoothed_counts(classify: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    ways: int, sigma: float, samples: int, generator: torch.Generator,
                    batch: int = DEFAULT_BATCH) -> torch.Tensor:
    """Class counts ``(len(x), ways)`` of ``classify`` over ``samples`` noisy copies of each
    query image ``x`` (float, [0, 1]): ``clip(x + N(0, sigma^2), 0, 1)``. ``classify`` maps
    ``(m, C, H, W)`` images to ``(m,)`` labels in ``0..ways-1``."""
    counts = torch.zeros(x.shape[0], ways, dtype=torch.long)
    per_call = max(1, batch // max(1, x.shape[0]))
    done = 0
    while done < samples:
        m = min(per_call, samples - done)
        noise = torch.randn((m, *x.shape), generator=generator, dtype=torch.float32)
        noisy = (x.cpu()[None] + sigma * noise).clamp_(0.0, 1.0).to(x.device)
        labels = classify(noisy.flatten(0, 1)).view(m, x.shape[0]).cpu().long()
        counts += torch.nn.functional.one_hot(labels, ways).sum(0)
        done += m
    return counts


def certify_queries(classify: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    ways: int, sigma: float, n0: int, n: int, alpha: float,
                    generator: torch.Generator, batch: int = DEFAULT_BATCH
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """CERTIFY for each query of ``x``: ``(classes, radii)``, class -1 and radius NaN where
    the query abstains (the lower bound of its top class's probability is below 1/2)."""
    choice = smoothed_counts(classify, x, ways, sigma, n0, generator, batch).argmax(1)
    counts = smoothed_counts(classify, x, ways, sigma, n, generator, batch)
    normal = torch.distributions.Normal(0.0, 1.0)
    classes = torch.full((x.shape[0],), -1, dtype=torch.long)
    radii = torch.full((x.shape[0],), math.nan, dtype=torch.float64)
    for q in range(x.shape[0]):
        c = int(choice[q])
        p_low = clopper_pearson_lower(int(counts[q, c]), n, alpha)
        if p_low > 0.5:
            classes[q] = c
            radii[q] = sigma * float(normal.icdf(torch.tensor(p_low, dtype=torch.float64)))
    return classes, radii


def _check_args(sigma: Any, samples: Any, n0: Any, alpha: Any, episodes: Any,
                radii: Any, batch: Any) -> tuple[float, int, int, float, int, list[float], int]:
    sigma = check_real(sigma, "sigma", 0.0, 1e3, low_open=True)
    samples = check_int(samples, "samples", 1, 10**8)
    n0 = check_int(n0, "n0", 1, 10**8)
    alpha = check_real(alpha, "alpha", 0.0, 0.5, low_open=True)
    episodes = check_int(episodes, "episodes", 1, 10**9)
    batch = check_int(batch, "batch", 1, 10**9)
    if isinstance(radii, (str, bytes)) or not isinstance(radii, Sequence) or not radii:
        raise TypeError(f"radii: expected a non-empty sequence of radii >= 0, got {radii!r}")
    checked = [check_real(r, "radii", 0.0) for r in radii]
    return sigma, samples, n0, alpha, episodes, sorted(checked), batch


def certify(learner: Any, sampler: Any, episodes: int = 100, sigma: float = 0.25,
            samples: int = 1000, n0: int = 100, alpha: float = 0.001,
            radii: Sequence[float] = DEFAULT_RADII, seed: int = 0, device: Any = None,
            batch: int = DEFAULT_BATCH, progress: bool = False) -> dict[str, Any]:
    """Certifies ``learner`` (any metarobust learner: it adapts to each episode's clean
    support set, then classifies noisy queries) on ``episodes`` episodes of ``sampler``
    (an EpisodeSampler). Returns ``{"sigma", "samples", "n0", "alpha", "episodes",
    "radii": [{"radius", "certified_accuracy", "ci95"}], "abstention", "abstention_ci95",
    "clean_accuracy", "clean_ci95", "queries": [{"episode", "label", "class", "radius"}]}``;
    ``clean_accuracy`` is the base classifier's accuracy on the clean queries. A radius at or
    beyond ``max_certifiable_radius`` (what ``samples`` copies can certify at best) is
    marked ``"certifiable": False``: its 0 says nothing about the classifier."""
    sigma, samples, n0, alpha, episodes, radii_list, batch = _check_args(
        sigma, samples, n0, alpha, episodes, radii, batch)
    check_bool(progress, "progress")
    device = torch.device(device) if device is not None else learner._param_ref().device
    rows: list[dict[str, Any]] = []
    per_radius = [[] for _ in radii_list]  # type: list[list[float]]
    abstain, clean = [], []
    for e in _episodes(episodes, progress):
        ep = sampler.sample(e)
        qx, qy = _float(ep.query_x), ep.query_y.long()
        classes, r = certify_episode(learner, ep, e, sigma=sigma, samples=samples, n0=n0,
                                     alpha=alpha, seed=seed, device=device, batch=batch)
        classify = episode_classifier(learner, _float(ep.support_x).to(device),
                                      ep.support_y.to(device), device)
        right = classes == qy
        for i, radius in enumerate(radii_list):
            per_radius[i].append(float((right & (r >= radius)).double().mean()))
        abstain.append(float((classes < 0).double().mean()))
        clean.append(float((classify(qx) == qy).double().mean()))
        rows += [{"episode": e, "label": int(y), "class": int(c),
                  "radius": None if math.isnan(float(v)) else float(v)}
                 for y, c, v in zip(qy, classes, r)]
    result: dict[str, Any] = {"sigma": sigma, "samples": samples, "n0": n0, "alpha": alpha,
                              "episodes": episodes, "ways": sampler.ways,
                              "shots": sampler.shots, "queries_per_class": sampler.queries}
    top = max_certifiable_radius(sigma, samples, alpha)
    result["max_certifiable_radius"] = top
    result["radii"] = [dict(zip(("radius", "certified_accuracy", "ci95", "certifiable"),
                                (radius, *mean_ci95(torch.tensor(v)), radius < top)))
                       for radius, v in zip(radii_list, per_radius)]
    result["abstention"], result["abstention_ci95"] = mean_ci95(torch.tensor(abstain))
    result["clean_accuracy"], result["clean_ci95"] = mean_ci95(torch.tensor(clean))
    result["queries"] = rows
    return result


def certify_episode(learner: Any, episode: Any, index: int, *, sigma: float, samples: int,
                    n0: int, alpha: float, seed: int, device: Any,
                    batch: int = DEFAULT_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`certify_queries` of one episode (episode ``index`` of its sampler: the noise
    stream is ``(seed, CERTIFY, index)``), the learner adapted to its clean support set."""
    classify = episode_classifier(learner, _float(episode.support_x).to(device),
                                  episode.support_y.to(device), device)
    gen = seeds.torch_generator(seed, seeds.CERTIFY, index)
    return certify_queries(classify, _float(episode.query_x), int(episode.support_y.max()) + 1,
                           sigma, n0, samples, alpha, gen, batch)


def noisy_images(batch: Any, sigma: float, seed: int) -> Any:
    """The batch with Gaussian noise of std ``sigma`` on its support and query images
    (float in [0, 1], uint8 converted), clipped to [0, 1]: training for randomized
    smoothing (Cohen et al.'s noise augmentation). The noise is drawn on the images' device
    from ``seed``. Noise on the queries alone, the test-time condition, made ProtoNet's
    first losses explode and its training stall at chance on Omniglot
    (experiments/noise_training.md)."""
    sx, qx = _float(batch.support_x), _float(batch.query_x)
    gen = torch.Generator(device=qx.device).manual_seed(seed)
    noisy = [(x + sigma * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
              ).clamp_(0.0, 1.0) for x in (sx, qx)]
    return replace_fields(batch, support_x=noisy[0], query_x=noisy[1])


def episode_classifier(learner: Any, support_x: torch.Tensor, support_y: torch.Tensor,
                       device: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The base classifier of one episode: query images to the labels ``learner`` predicts
    after adapting to the support set (on the CPU)."""
    def classify(images: torch.Tensor) -> torch.Tensor:
        return learner.predict(support_x, support_y, images.to(device)).argmax(1).cpu()

    return classify


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _episodes(episodes: int, progress: bool) -> Any:
    if not progress:
        return range(episodes)
    from tqdm import tqdm

    return tqdm(range(episodes), desc="certify", unit="episode")
