"""Open-set queries: episodes whose query set also holds images of classes outside the
episode (unknowns), the scores that say how confident a learner is in a query, and the AUROC
with which a score separates the known queries from the unknown ones.

An open-set episode at unknown fraction ``f`` is drawn by the
:class:`~metarobust.EpisodeSampler` as an episode of ``ways + extra`` classes (same seed,
same index: deterministic): its first ``ways`` labels form the ordinary ``ways``-way episode
(support and known queries), and ``round(f / (1 - f) * ways * queries)`` queries of the
``extra`` other classes are the unknowns, so that a fraction ``f`` of all queries is unknown.

Scores (higher: the learner is more sure the query is of a known class):

* ``msp``: the maximum softmax probability over the episode's classes (every learner);
* ``neg_distance``: minus the distance to the nearest prototype (ProtoNet; its largest
  logit divided by its ``scale``);
* ``snatcher``: a training-free transformation-consistency score in the manner of SnaTCHer
  (Jeong et al., 2021) for ProtoNet: the query replaces the prototype of its predicted
  class, both prototype sets go through a parameter-free attention over the prototypes
  (``T(P) = softmax(-d(P, P) / tau) P``, squared Euclidean ``d``, ``tau`` the mean squared
  distance between the episode's prototypes), and the score is minus the squared change
  ``||T(P') - T(P)||^2``: a query that fits the episode's set of classes changes it less.

>>> sampler = OpenSetSampler(test_set, ways=5, shots=1, queries=15, unknown_fraction=0.5)
>>> batch = sampler.sample_batch(0, 100)                                  # doctest: +SKIP
>>> known, unknown, correct = open_set_scores(learner, batch)             # doctest: +SKIP
>>> per_episode = auroc(known["msp"], unknown["msp"])                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from .._checks import check_int, check_real
from ..episodes import Episode, EpisodeSampler
from ..evaluate import mean_ci95
from ..learners.protonet import ProtoNet

__all__ = ["SCORES", "OpenSetBatch", "OpenSetSampler", "auroc", "evaluate_open_set",
           "open_set_scores", "scores_of", "transformation_change"]

SCORES = ("msp", "neg_distance", "snatcher")


@dataclasses.dataclass(frozen=True)
class OpenSetBatch:
    """A batch of open-set episodes: ``episode`` is the ordinary ``ways``-way batch (support,
    known queries and their labels), ``unknown_x`` ``(B, U, C, H, W)`` the unknown queries."""

    episode: Episode
    unknown_x: torch.Tensor
    ways: int

    def to(self, device: torch.device | str) -> OpenSetBatch:
        return OpenSetBatch(self.episode.to(device), self.unknown_x.to(device), self.ways)


def unknown_count(unknown_fraction: float, known: int) -> int:
    """Unknown queries making ``unknown_fraction`` of all queries next to ``known`` known ones
    (rounded half up)."""
    return int(math.floor(unknown_fraction / (1.0 - unknown_fraction) * known + 0.5))


class OpenSetSampler:
    """Open-set episodes over a dataset (see the module's description).

    Args:
        dataset: an ImageDataset or ``(images, labels)``, as for :class:`EpisodeSampler`.
        ways, shots, queries: the known episode.
        unknown_fraction: the fraction of all queries from classes outside the episode, in
            [0, 1) (0.5: as many unknown queries as known ones).
        seed: the sampler's seed.
        sampler_kw: passed on to :class:`EpisodeSampler` (e.g. ``dtype``).
    """

    def __init__(self, dataset: Any, *, ways: int, shots: int, queries: int,
                 unknown_fraction: float, seed: int = 0, **sampler_kw: Any) -> None:
        self.ways = check_int(ways, "ways", 1)
        shots = check_int(shots, "shots", 1)
        self.queries = check_int(queries, "queries", 1)
        self.unknown_fraction = check_real(unknown_fraction, "unknown_fraction", 0.0, 1.0,
                                           high_open=True)
        self.unknowns = unknown_count(self.unknown_fraction, self.ways * self.queries)
        extra = -(-self.unknowns // self.queries)
        labels = dataset.labels if hasattr(dataset, "labels") else dataset[1]
        classes = int(np.unique(np.asarray(labels)).size)
        if self.ways + extra > classes:
            raise ValueError(
                f"ways, queries, unknown_fraction: {self.ways}-way episodes with "
                f"{self.unknowns} unknown queries (unknown_fraction "
                f"{self.unknown_fraction:g}) from {extra} other classes of {self.queries} "
                f"queries need {self.ways + extra} classes, but the dataset has {classes}")
        sampler_kw.setdefault("dtype", "float32")
        self._sampler = EpisodeSampler(dataset, ways=self.ways + extra, shots=shots,
                                       queries=self.queries, seed=seed, **sampler_kw)
        self.shots = shots

    def sample_batch(self, start: int, count: int) -> OpenSetBatch:
        """Open-set episodes ``start .. start + count - 1``."""
        b = self._sampler.sample_batch(start, count)
        ns, nq = self.ways * self.shots, self.ways * self.queries
        known = Episode(b.support_x[:, :ns], b.support_y[:, :ns], b.query_x[:, :nq],
                        b.query_y[:, :nq], b.classes[:, :self.ways])
        return OpenSetBatch(known, b.query_x[:, nq:nq + self.unknowns], self.ways)


def scores_of(learner: Any) -> tuple[str, ...]:
    """The scores a learner has: ``msp``, and ``neg_distance`` and ``snatcher`` for a
    ProtoNet."""
    return SCORES if isinstance(learner, ProtoNet) else ("msp",)


def _scores(learner: Any, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"msp": torch.softmax(logits.double(), -1).amax(-1)}
    if "neg_distance" in scores_of(learner):
        out["neg_distance"] = logits.double().amax(-1) / learner.scale
    return out


def open_set_scores(learner: Any, batch: OpenSetBatch
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """``(known scores, unknown scores, correct)``: each score ``(B, known queries)`` and
    ``(B, U)`` as float64 on the CPU, and whether each known query is classified right.

    The known and unknown queries are classified together, in one pass per episode (so a
    learner normalising over the query set sees both)."""
    if not isinstance(batch, OpenSetBatch):
        raise TypeError(f"batch: expected an OpenSetBatch, got {type(batch).__name__}")
    ep, nq = batch.episode, batch.episode.query_x.shape[1]
    qx = torch.cat([ep.query_x, batch.unknown_x.to(ep.query_x.dtype)], dim=1)
    # the unknowns carry label 0: a placeholder in range, never used
    qy = torch.cat([ep.query_y, ep.query_y.new_zeros(batch.unknown_x.shape[:2])], dim=1)
    logits = learner.query_logits(dataclasses.replace(ep, query_x=qx, query_y=qy),
                                  batch.ways).detach().cpu()
    correct = logits[:, :nq].argmax(-1) == ep.query_y.cpu()
    scores = _scores(learner, logits)
    if "snatcher" in scores_of(learner):
        scores["snatcher"] = _snatcher(learner, ep.support_x, ep.support_y, qx, batch.ways,
                                       logits.argmax(-1))
    return ({k: v[:, :nq] for k, v in scores.items()},
            {k: v[:, nq:] for k, v in scores.items()}, correct)


def _attend(protos: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``softmax(-d(P, P) / tau) P`` over the last two dimensions (P: ``(..., W, D)``)."""
    d = torch.cdist(protos, protos) ** 2
    return torch.softmax(-d / tau, -1) @ protos


def transformation_change(protos: torch.Tensor, queries: torch.Tensor,
                          predicted: torch.Tensor) -> torch.Tensor:
    """``||T(P') - T(P)||^2`` per query, ``P'`` the prototypes ``(B, W, D)`` with the row
    ``predicted`` ``(B, Q)`` replaced by the query ``(B, Q, D)``; ``T`` as in ``snatcher``."""
    b, w, _ = protos.shape
    d = torch.cdist(protos, protos) ** 2
    tau = (d.sum((1, 2)) / max(w * (w - 1), 1)).clamp_min(1e-12)[:, None, None]
    base = _attend(protos, tau)                                         # (B, W, D)
    swapped = protos[:, None].expand(-1, queries.shape[1], -1, -1).clone()  # (B, Q, W, D)
    idx = predicted[..., None, None].expand(-1, -1, 1, protos.shape[-1])
    swapped.scatter_(2, idx, queries[:, :, None])
    moved = _attend(swapped, tau[:, None])
    return ((moved - base[:, None]) ** 2).sum((2, 3))


def _snatcher(learner: Any, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, ways: int,
              predicted: torch.Tensor) -> torch.Tensor:
    """Minus the transformation change of each query, from the learner's embeddings and
    mean prototypes (float64 on the CPU)."""
    b, s = sx.shape[:2]
    with torch.no_grad():
        items = torch.cat([sx, qx], dim=1).reshape(b * (s + qx.shape[1]), *sx.shape[2:])
        emb = learner.embed(items, tasks=b).reshape(b, s + qx.shape[1], -1).double().cpu()
    onehot = torch.nn.functional.one_hot(sy.cpu(), ways).double()           # (B, S, W)
    protos = onehot.transpose(1, 2) @ emb[:, :s] / onehot.sum(1)[..., None].clamp_min(1)
    return -transformation_change(protos, emb[:, s:], predicted)


def auroc(known: Any, unknown: Any) -> torch.Tensor:
    """Per-episode AUROC of a score separating known (higher) from unknown queries: the
    Mann-Whitney statistic ``P(known > unknown) + P(known == unknown) / 2`` over all pairs of
    an episode, from average ranks (ties share their rank).

    ``known`` ``(B, n)`` and ``unknown`` ``(B, m)`` (or 1-d for one episode), finite, with
    ``n, m >= 1``. Returns float64 ``(B,)`` (0-d for 1-d inputs): 1 when every known query
    scores above every unknown one, 0.5 for a score that does not tell them apart.
    """
    k = _score_array(known, "known")
    u = _score_array(unknown, "unknown")
    one = k.ndim == 1
    k, u = np.atleast_2d(k), np.atleast_2d(u)
    if k.shape[0] != u.shape[0]:
        raise ValueError(f"known, unknown: {k.shape[0]} and {u.shape[0]} episodes; expected "
                         "the same number")
    n, m = k.shape[1], u.shape[1]
    ranks = rankdata(np.concatenate([k, u], axis=1), method="average", axis=1)
    u_stat = ranks[:, :n].sum(1) - n * (n + 1) / 2.0
    out = torch.from_numpy(u_stat / (n * m))
    return out[0] if one else out


def _score_array(x: Any, name: str) -> np.ndarray:
    """Scores as a float64 array: a tensor, an array or a (nested) list of real numbers."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected real scores (a tensor, array or list), got a "
                            f"ragged or mixed list") from None
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiu":
        what = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name}: expected real scores (a tensor, array or list), got {what}")
    a = x.astype(np.float64)
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise ValueError(f"{name}: expected scores (n,) or (episodes, n) with n >= 1, got "
                         f"shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: scores must be finite (got NaN or infinity)")
    return a


def evaluate_open_set(learner: Any, dataset: Any, *, ways: int, shots: int, queries: int,
                      unknown_fraction: float, episodes: int, seed: int = 0,
                      batch_size: int = 50, device: torch.device | str = "cpu"
                      ) -> dict[str, dict[str, Any]]:
    """Per score of the learner: the closed-set accuracy on the known queries and the AUROC,
    each a mean with its 95% CI over episodes ``0 .. episodes - 1`` (paired across scores:
    the same episodes and forward passes).

    Returns ``{score: {"accuracy", "ci95", "auroc", "auroc_ci95", "per_episode",
    "auroc_per_episode"}}``.
    """
    episodes = check_int(episodes, "episodes", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    sampler = OpenSetSampler(dataset, ways=ways, shots=shots, queries=queries,
                             unknown_fraction=unknown_fraction, seed=seed)
    if sampler.unknowns == 0:
        raise ValueError(f"unknown_fraction: {unknown_fraction:g} gives no unknown query next "
                         f"to {ways * queries} known ones")
    accs: list[torch.Tensor] = []
    aurocs: dict[str, list[torch.Tensor]] = {k: [] for k in scores_of(learner)}
    with torch.no_grad():
        for start in range(0, episodes, batch_size):
            batch = sampler.sample_batch(start, min(batch_size, episodes - start)).to(device)
            known, unknown, correct = open_set_scores(learner, batch)
            accs.append(correct.double().mean(1))
            for k in aurocs:
                aurocs[k].append(auroc(known[k], unknown[k]))
    acc = torch.cat(accs)
    mean, ci = mean_ci95(acc)
    out = {}
    for k, parts in aurocs.items():
        a = torch.cat(parts)
        a_mean, a_ci = mean_ci95(a)
        out[k] = {"accuracy": mean, "ci95": ci, "auroc": a_mean, "auroc_ci95": a_ci,
                  "per_episode": acc.tolist(), "auroc_per_episode": a.tolist()}
    return out
