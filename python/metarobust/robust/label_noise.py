"""Support-label noise for batches of episodes.

The rate is a fraction of the whole support set: ``n = floor(rate * ways * shots + 0.5)``
support items of every episode are corrupted (the rate over all ``ways * shots`` items,
rounded half up), spread over the classes as evenly as possible (each class loses
``n // ways`` items, and ``n % ways`` classes drawn at random lose one more), the items
within a class drawn at random. So the rate means the same at every shot count: at 5-way
1-shot, rate 0.4 corrupts 2 of the 5 support items; at 5-way 5-shot, 10 of 25 (2 per
class). While ``rate <= (shots - 1) / shots`` every class keeps at least one clean item;
at 1 shot a corrupted class has none (its only item is wrong), as in a one-shot label error.
The fraction actually corrupted, ``n / (ways * shots)``, is :func:`effective_rate`; a rate
too small to corrupt one item (``n = 0``) changes nothing.

Three kinds:

``"symmetric"``
    the item gets a wrong label drawn uniformly from the other ``ways - 1`` labels.
``"paired"``
    the item of label ``c`` gets the fixed wrong label ``(c + 1) % ways`` (a systematic
    confusion of one class with another).
``"outlier"``
    the item keeps its label but its image is replaced by an image of a dataset class that
    is not in the episode (``batch.classes[b]``): a class uniformly among those outside the
    episode, then an image of it uniformly. Needs the ``dataset`` the episodes came from.

Query items are never touched. Which items are corrupted, and how, is a pure function of
``(seed, kind, episode index)`` where episode ``j`` of the batch has index ``start + j``: so
noisy episodes do not depend on how the episodes were split into batches, and the same
``(seed, start)`` as the sampler's gives paired, reproducible results.

>>> import metarobust as mr
>>> ds = mr.data.glyphs(num_classes=20, per_class=10, seed=0)
>>> batch = mr.EpisodeSampler(ds, ways=5, shots=4, queries=2, seed=0).sample_batch(0, 3)
>>> noisy, counts = apply_label_noise(batch, "symmetric", 0.5, seed=1)
>>> counts.tolist()                     # 10 of the 20 items: 2 in each of the 5 classes
[10, 10, 10]
>>> int((noisy.support_y != batch.support_y).sum(1)[0])
10
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Real
from typing import Any

import numpy as np
import torch

from .. import seeds
from .._checks import check_int
from ..episodes import Episode

__all__ = ["LABEL_NOISE_KINDS", "apply_label_noise", "corrupted_items", "effective_rate"]

LABEL_NOISE_KINDS = ("symmetric", "paired", "outlier")
_KIND_TAG = {"symmetric": 1, "paired": 2, "outlier": 3}


def check_rate(rate: Any, name: str = "rate") -> float:
    """``rate`` as a float in [0, 1]; TypeError for non-numbers, ValueError otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number in [0, 1], got {rate!r} "
                        f"({type(rate).__name__})")
    value = float(rate)
    if not (0.0 <= value <= 1.0):  # also rejects NaN
        raise ValueError(f"{name}: must be in [0, 1], got {rate!r}")
    return value


def corrupted_items(rate: float, ways: int, shots: int) -> int:
    """Support items corrupted in each episode: ``rate * ways * shots`` rounded half up."""
    ways, shots = check_int(ways, "ways", 1), check_int(shots, "shots", 1)
    return int(math.floor(check_rate(rate) * ways * shots + 0.5))


def effective_rate(rate: float, ways: int, shots: int) -> float:
    """The fraction of the support set that ``rate`` corrupts: ``corrupted_items / (ways *
    shots)`` (0 when the rate is too small to corrupt one item)."""
    return corrupted_items(rate, ways, shots) / (ways * shots)


def _episode_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    return seeds.numpy_rng(seed, seeds.LABEL_NOISE, _KIND_TAG[kind], index)


class _ClassIndex:
    """Dataset images grouped by class, for drawing outliers."""

    def __init__(self, dataset: Any, item_shape: tuple[int, ...]) -> None:
        from ..episodes import _as_arrays

        images, labels = _as_arrays(dataset, None)
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise TypeError(f"dataset: expected uint8 images (N, C, H, W), got "
                            f"{images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
            raise TypeError(f"dataset: expected integer labels (N,) = ({images.shape[0]},), got "
                            f"{labels.dtype} {labels.shape}")
        if tuple(images.shape[1:]) != tuple(item_shape):
            raise ValueError(f"dataset: images of shape {tuple(images.shape[1:])} do not match "
                             f"the episodes' {tuple(item_shape)}")
        self.images = images
        order = np.argsort(labels, kind="stable")
        self.classes, starts, counts = np.unique(labels[order], return_index=True,
                                                 return_counts=True)
        self.order, self.starts, self.counts = order, starts, counts

    def draw(self, rng: np.random.Generator, exclude: np.ndarray, n: int) -> np.ndarray:
        """Dataset indices of ``n`` images of classes outside ``exclude``."""
        allowed = np.flatnonzero(~np.isin(self.classes, exclude))
        if allowed.size == 0:
            raise ValueError(f"dataset: kind='outlier' needs a class outside the episode, but "
                             f"all {self.classes.size} dataset classes are in it")
        cls = allowed[rng.integers(0, allowed.size, size=n)]
        offset = (rng.random(n) * self.counts[cls]).astype(np.int64)
        offset = np.minimum(offset, self.counts[cls] - 1)
        return self.order[self.starts[cls] + offset]


def _support_positions(batch: Episode) -> tuple[np.ndarray, np.ndarray]:
    """The support labels ``(B, S)`` on the host and the item positions of each class
    ``(B, ways, shots)``; checks that every support set is balanced."""
    sy = batch.support_y
    if sy.dim() != 2 or batch.classes.dim() != 2 or batch.support_x.dim() < 3:
        raise ValueError(f"batch: expected support_y (B, S) and classes (B, ways), got "
                         f"{tuple(sy.shape)} and {tuple(batch.classes.shape)}")
    b, s = sy.shape
    ways = batch.classes.shape[1]
    if ways < 1 or s % ways:
        raise ValueError(f"batch: {s} support items is not a multiple of ways={ways}")
    shots = s // ways
    labels = sy.detach().cpu().numpy()
    if labels.size and (labels.min() < 0 or labels.max() >= ways):
        raise ValueError(f"batch.support_y: labels must be in 0..{ways - 1}")
    pos = np.argsort(labels, axis=1, kind="stable").reshape(b, ways, shots)
    if not (np.take_along_axis(labels, pos.reshape(b, s), 1).reshape(b, ways, shots)
            == np.arange(ways)[None, :, None]).all():
        raise ValueError(f"batch.support_y: each label 0..{ways - 1} must appear {shots} times "
                         "in every support set")
    return labels, pos


def _class_counts(rng: np.random.Generator, ways: int, n: int) -> np.ndarray:
    """Items to corrupt in each class: ``n // ways``, one more for ``n % ways`` classes
    drawn at random (no draw when ``n`` divides evenly)."""
    counts = np.full(ways, n // ways, dtype=np.int64)
    if n % ways:
        counts[rng.choice(ways, n % ways, replace=False)] += 1
    return counts


def _chosen(rng: np.random.Generator, pos: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """``counts[c]`` random items of each class ``c`` of one episode (the smallest of random
    keys), as positions in the support set."""
    ways, shots = pos.shape
    order = np.take_along_axis(pos, np.argsort(rng.random((ways, shots)), axis=1), 1)
    return [order[c, :counts[c]] for c in range(ways)]


def _with_wrong_labels(batch: Episode, kind: str, labels: np.ndarray, pos: np.ndarray, n: int,
                       seed: int, start: int) -> Episode:
    """Symmetric (a uniform other class) or paired (``(c + 1) % ways``) wrong labels."""
    b, ways, _ = pos.shape
    new_labels = labels.copy()
    for j in range(b):
        rng = _episode_rng(seed, kind, start + j)
        counts = _class_counts(rng, ways, n)
        chosen = _chosen(rng, pos[j], counts)
        if kind == "symmetric":
            shift = rng.integers(1, ways, size=(ways, int(counts.max())))
            for c in range(ways):
                new_labels[j, chosen[c]] = (c + shift[c, :counts[c]]) % ways
        else:
            for c in range(ways):
                new_labels[j, chosen[c]] = (c + 1) % ways
    sy = batch.support_y
    return dataclasses.replace(batch,
                               support_y=torch.from_numpy(new_labels).to(sy.device, sy.dtype))


def _with_outliers(batch: Episode, index: _ClassIndex, pos: np.ndarray, n: int, seed: int,
                   start: int) -> Episode:
    """Chosen support images replaced by images of classes outside the episode."""
    b, ways, _ = pos.shape
    classes = batch.classes.detach().cpu().numpy()
    flat_rows, flat_items, sources = [], [], []
    for j in range(b):
        rng = _episode_rng(seed, "outlier", start + j)
        chosen = np.concatenate(_chosen(rng, pos[j], _class_counts(rng, ways, n)))
        flat_rows.append(np.full(n, j))
        flat_items.append(chosen)
        sources.append(index.draw(rng, classes[j], n))
    rows = torch.from_numpy(np.concatenate(flat_rows))
    items = torch.from_numpy(np.concatenate(flat_items))
    imgs = torch.from_numpy(index.images[np.concatenate(sources)])
    sx = batch.support_x.clone()
    if sx.dtype == torch.uint8:
        imgs = imgs.to(sx.device)
    elif sx.is_floating_point():
        imgs = imgs.to(sx.device, sx.dtype) / 255.0
    else:
        raise TypeError(f"batch.support_x: expected uint8 or float images, got {sx.dtype}")
    sx[rows.to(sx.device), items.to(sx.device)] = imgs
    return dataclasses.replace(batch, support_x=sx)


def apply_label_noise(batch: Episode, kind: str, rate: float, *, seed: int = 0,
                      start: int = 0, dataset: Any = None) -> tuple[Episode, torch.Tensor]:
    """Corrupt the support sets of a batch of episodes.

    Args:
        batch: an :class:`~metarobust.Episode` batch (leading dimension ``B``), e.g. from
            ``sampler.sample_batch(start, B)``; a single episode is accepted too. Every label
            ``0..ways-1`` must appear equally often (``shots`` times) in each support set.
        kind: ``"symmetric"``, ``"paired"`` or ``"outlier"`` (see the module docs).
        rate: fraction of the support set to corrupt, in [0, 1]:
            ``floor(rate * ways * shots + 0.5)`` items, spread evenly over the classes.
        seed: seed of the noise (any int in ``0 .. 2**64-1``).
        start: index of the batch's first episode (the ``start`` of ``sample_batch``).
        dataset: for ``"outlier"``: the dataset the episodes were drawn from (an
            ImageDataset or an ``(images, labels)`` tuple of uint8 ``(N, C, H, W)`` images
            and int64 labels, the labels ``batch.classes`` refers to). Float batches get the
            outliers as ``images / 255``.

    Returns:
        ``(noisy, counts)``: a new Episode whose support (labels, or images for
        ``"outlier"``) is corrupted and whose query tensors are the batch's own, and an int64
        tensor ``(B,)`` (a scalar for a single episode) with the number of corrupted support
        items in each episode.
    """
    if not isinstance(batch, Episode):
        raise TypeError(f"batch: expected an Episode, got {type(batch).__name__}")
    if not isinstance(kind, str) or kind not in LABEL_NOISE_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(LABEL_NOISE_KINDS)}; got {kind!r}")
    rate = check_rate(rate)
    seed = check_int(seed, "seed", 0, 2**64 - 1)
    start = check_int(start, "start", 0, 2**64 - 1)
    single = batch.support_y.dim() == 1
    if single:
        batch = Episode(*(getattr(batch, f.name)[None] for f in dataclasses.fields(batch)))
    labels, pos = _support_positions(batch)
    b, ways, shots = pos.shape
    n = int(math.floor(rate * ways * shots + 0.5))
    if kind in ("symmetric", "paired") and ways < 2 and n > 0:
        raise ValueError(f"kind: {kind!r} needs ways >= 2 (a wrong label), got ways={ways}")
    index = None
    if kind == "outlier":
        if dataset is None:
            raise ValueError("dataset: kind='outlier' needs the dataset the episodes come "
                             "from (an ImageDataset or an (images, labels) tuple), got None")
        index = _ClassIndex(dataset, tuple(batch.support_x.shape[2:]))
    counts = torch.full((b,), n, dtype=torch.int64)
    if n == 0:
        noisy = dataclasses.replace(batch)
    elif index is not None:
        noisy = _with_outliers(batch, index, pos, n, seed, start)
    else:
        noisy = _with_wrong_labels(batch, kind, labels, pos, n, seed, start)
    if single:
        return noisy[0], counts[0]
    return noisy, counts
