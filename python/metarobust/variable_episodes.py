"""Variable-way, variable-shot episodes from one or more datasets (Meta-Dataset's sampling
procedure), in the Rust sampler.

>>> import numpy as np, metarobust as mr
>>> images = np.zeros((400, 1, 8, 8), np.uint8); labels = np.repeat(np.arange(20), 20)
>>> sampler = mr.VariableEpisodeSampler((images, labels), seed=0)
>>> batch = sampler.sample_batch(0, 4)
>>> batch.support_x.shape[0], batch.ways.shape
(4, torch.Size([4]))
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
import torch

from . import _core
from ._checks import check_int, check_nbytes, check_real
from ._sampler_args import check_classes, check_scale, image_arrays, listify
from ._sampler_args import pin_memory as _pin
from .episodes import DTYPES, BatchIterator, Episode

__all__ = ["VariableEpisode", "VariableEpisodeSampler"]

_MAX_INDEX = 2**64 - 1
_MAX_COUNT = 2**63 - 1
_NUMPY = {torch.float32: np.float32, torch.uint8: np.uint8, torch.int64: np.int64}


@dataclass(frozen=True)
class VariableEpisode:
    """A batch of variable-way episodes, padded, or one episode (no padding).

    A batch of ``B`` episodes: ``support_x (B, S, C, H, W)`` and ``support_y (B, S)``, with
    ``S`` the batch's largest support set; episode ``j``'s support items come first
    (grouped by label: ``support_y`` in ``0..ways[j]-1``), then padding (zero pixels,
    label -1). ``query_x (B, Q, C, H, W)``, ``query_y (B, Q)`` likewise (each way has the
    same number of queries). ``classes (B, W)``: the dataset class of each label, -1 past
    the episode's ways. ``ways (B,)`` and ``source (B,)`` (the index of the dataset the
    episode comes from). ``batch[j]`` is episode ``j`` without its padding.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    ways: torch.Tensor
    source: torch.Tensor

    def __len__(self) -> int:
        if self.ways.dim() != 1:
            raise TypeError("VariableEpisode: len() needs a batch")
        return self.ways.shape[0]

    def __getitem__(self, j: int) -> VariableEpisode:
        """Episode ``j`` of a batch, without padding."""
        if self.ways.dim() != 1:
            raise TypeError("VariableEpisode: indexing needs a batch")
        j = check_int(j, "j", -len(self), len(self) - 1) % len(self)
        s = int((self.support_y[j] >= 0).sum())
        q = int((self.query_y[j] >= 0).sum())
        w = int(self.ways[j])
        return VariableEpisode(self.support_x[j, :s], self.support_y[j, :s],
                               self.query_x[j, :q], self.query_y[j, :q],
                               self.classes[j, :w], self.ways[j], self.source[j])

    def as_episode(self) -> Episode:
        """One episode as an :class:`~metarobust.Episode` with a task dimension of 1 (what
        a learner's ``meta_backward`` and ``evaluate_batch`` take, with ``ways``)."""
        if self.ways.dim() != 0:
            raise TypeError("VariableEpisode: as_episode() needs one episode (index a batch)")
        return Episode(self.support_x[None], self.support_y[None], self.query_x[None],
                       self.query_y[None], self.classes[None])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> VariableEpisode:
        """The same episodes on ``device``."""
        return VariableEpisode(
            *(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)))


def _sources(sources: Any, layout: str | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each source's checked ``(images, labels)``: a list of datasets, or one dataset."""
    datasets = sources if isinstance(sources, list) else [sources]
    if not datasets:
        raise ValueError("sources: the list is empty; give at least one dataset")
    out = []
    for i, ds in enumerate(datasets):
        try:
            images, labels = image_arrays(ds, None, layout)
        except (TypeError, ValueError) as e:
            raise type(e)(f"sources[{i}]: {e}") from None
        if images.ndim != 4:
            raise ValueError(f"sources[{i}]: variable-way episodes need images (N, C, H, W), "
                             f"got feature vectors of shape {images.shape}")
        out.append((images, labels))
    return out


def _weights(weights: Any, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        raise TypeError(f"weights: expected a list of {n} numbers or None, got "
                        f"{type(weights).__name__}")
    values = [check_real(w, "weights", 0.0) for w in weights]
    if len(values) != n:
        raise ValueError(f"weights: {len(values)} weights for {n} sources; give one per source")
    if not sum(values) > 0 or not math.isfinite(sum(values)):
        raise ValueError(f"weights: must have a positive finite sum, got {values}")
    return values


def _classes(classes: Any, n: int) -> list[np.ndarray | None]:
    if classes is None:
        return [None] * n
    if n == 1:
        return [check_classes(classes)]
    if not isinstance(classes, (list, tuple)) or len(classes) != n:
        raise ValueError(f"classes: with {n} sources, expected a list of {n} class lists "
                         f"(None for all classes of a source), got {classes!r}")
    return [check_classes(c) for c in classes]


class VariableEpisodeSampler:
    """Variable-way, variable-shot episodes over one or several uint8 (N, C, H, W) image
    datasets, following the sampling procedure of Meta-Dataset (Triantafillou et al., 2020,
    section 3.2; without class hierarchies). Per episode:

    1. a source, with probability proportional to ``weights`` (all equal by default);
    2. ``ways`` uniform in ``min_ways .. min(max_ways, classes of the source)``, the
       classes uniformly without replacement;
    3. queries per class ``min(max_query_per_class, floor(n_min / 2))`` with ``n_min`` the
       smallest class of the episode (the same for every class);
    4. support set size ``min(max_support, sum_c floor(beta * min(max_support_per_class,
       n_c - queries)) + 1)``, ``beta`` uniform in [0, 1), ``n_c`` the items of class ``c``;
    5. shots of class ``c``: ``min(floor(p_c * (size - ways)) + 1, n_c - queries)`` with
       ``p_c`` proportional to ``n_c * exp(a_c)``, ``a_c`` uniform in
       ``[min_log_weight, max_log_weight)``: imbalanced supports.

    The defaults are Meta-Dataset's constants. Episode ``i`` is a pure function of
    ``(seed, i)`` (source choice included): the same for any thread count or batch split.
    Datasets are referenced, never copied (a pickled sampler carries its arrays and rebuilds
    the Rust side: the same episodes). Batches are padded (see
    :class:`VariableEpisode`). ProtoNet (any metric learner) trains and evaluates on them;
    MAML, whose classifier has a fixed number of ways, refuses them.

    Args:
        sources: a dataset (an ImageDataset or an ``(images, labels)`` tuple) or a list of
            them, all with one image shape.
        weights: one number >= 0 per source, or None for equal weights.
        seed: 0 <= seed < 2**64.
        dtype, mean, std, layout: as for :class:`~metarobust.EpisodeSampler`.
        classes: restrict episodes to these classes (a split): a list for one source, one
            list (or None) per source for several.
        min_ways, max_ways, max_support, max_support_per_class, max_query_per_class,
        min_log_weight, max_log_weight: the procedure's constants.
    """

    def __init__(self, sources: Any, weights: Any = None, *, seed: int = 0,
                 dtype: str = "float32", mean: float | list[float] | None = None,
                 std: float | list[float] | None = None, classes: Any = None,
                 layout: str | None = None, min_ways: int = 5, max_ways: int = 50,
                 max_support: int = 500, max_support_per_class: int = 100,
                 max_query_per_class: int = 10, min_log_weight: float = math.log(0.5),
                 max_log_weight: float = math.log(2)) -> None:
        arrays = _sources(sources, layout)
        self.weights = _weights(weights, len(arrays))
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"dtype: expected 'float32' or 'uint8', got {dtype!r}")
        if dtype == "uint8" and (mean is not None or std is not None):
            raise ValueError("mean/std: only apply to dtype='float32' output")
        self.seed = check_int(seed, "seed", 0, _MAX_INDEX)
        self.dtype = dtype
        sizes = [check_int(v, n, 1, _MAX_COUNT) for v, n in (
            (min_ways, "min_ways"), (max_ways, "max_ways"), (max_support, "max_support"),
            (max_support_per_class, "max_support_per_class"),
            (max_query_per_class, "max_query_per_class"))]
        logs = [check_real(min_log_weight, "min_log_weight"),
                check_real(max_log_weight, "max_log_weight")]
        (self.min_ways, self.max_ways, self.max_support, self.max_support_per_class,
         self.max_query_per_class) = sizes
        self.min_log_weight, self.max_log_weight = logs
        scale = listify(mean, "mean"), listify(std, "std")
        check_scale(*scale)
        class_lists = _classes(classes, len(arrays))
        self._core = _core.VariableSamplerCore(
            [a[0] for a in arrays], [a[1] for a in arrays], self.weights, self.seed,
            class_lists, *scale, sizes, logs)
        self.image_shape: tuple[int, ...] = self._core.image_shape
        self._state = {"arrays": arrays, "classes": class_lists, "scale": scale,
                       "sizes": sizes, "logs": logs}

    # Pickling rebuilds the Rust side (spawn-based DataLoader workers).
    def __getstate__(self) -> dict:
        return {"state": self._state, "weights": self.weights, "seed": self.seed,
                "dtype": self.dtype}

    def __setstate__(self, state: dict) -> None:
        st = state["state"]
        n = len(st["arrays"])
        VariableEpisodeSampler.__init__(
            self, list(st["arrays"]), state["weights"], seed=state["seed"],
            dtype=state["dtype"], mean=st["scale"][0], std=st["scale"][1],
            classes=st["classes"] if n > 1 else st["classes"][0], layout="NCHW",
            **dict(zip(("min_ways", "max_ways", "max_support", "max_support_per_class",
                        "max_query_per_class"), st["sizes"])),
            min_log_weight=st["logs"][0], max_log_weight=st["logs"][1])

    @property
    def class_ids(self) -> list[list[int]]:
        """The dataset classes each source's episodes draw from."""
        return self._core.class_ids

    def __repr__(self) -> str:
        return (f"VariableEpisodeSampler(sources={len(self.weights)}, ways={self.min_ways}.."
                f"{self.max_ways}, max_support={self.max_support}, seed={self.seed}, "
                f"dtype={self.dtype!r}, image_shape={self.image_shape})")

    def describe(self, start: int, count: int) -> np.ndarray:
        """``(count, 4)`` int64: source, ways, support items and query items of episodes
        ``start .. start + count`` (cheap: no pixel is read)."""
        start = check_int(start, "start", 0, _MAX_INDEX)
        count = check_int(count, "count", 0, _MAX_COUNT)
        return self._core.describe(start, count)

    def sample(self, index: int) -> VariableEpisode:
        """Episode ``index`` (no padding)."""
        return self.sample_batch(check_int(index, "index", 0, _MAX_INDEX), 1)[0]

    def sample_batch(self, start: int, count: int, pin_memory: bool = False) -> VariableEpisode:
        """Episodes ``start .. start + count``, padded to the batch's largest; ``b[j] ==
        sample(start + j)``."""
        start = check_int(start, "start", 0, _MAX_INDEX)
        count = check_int(count, "count", 1, _MAX_COUNT)
        if start + count - 1 > _MAX_INDEX:
            raise ValueError(f"start, count: episodes {start} .. {start} + {count} pass the "
                             "last index 2**64 - 1")
        pin = _pin(pin_memory)
        info = self.describe(start, count)
        ways, s, q = (int(info[:, k].max()) for k in (1, 2, 3))
        item = int(np.prod(self.image_shape)) * np.dtype(DTYPES[self.dtype]).itemsize
        check_nbytes(count * ((s + q) * (item + 8) + 8 * ways), "count",
                      f"{count} episodes of up to {s} support and {q} query images "
                      f"{self.image_shape}")
        tdt = torch.float32 if self.dtype == "float32" else torch.uint8

        def empty(*shape: int, dt: torch.dtype = tdt) -> torch.Tensor:
            if pin:
                return torch.empty(shape, dtype=dt, pin_memory=True)
            return torch.from_numpy(np.empty(shape, dtype=_NUMPY[dt]))

        sx, sy = empty(count, s, *self.image_shape), empty(count, s, dt=torch.int64)
        qx, qy = empty(count, q, *self.image_shape), empty(count, q, dt=torch.int64)
        cl = empty(count, ways, dt=torch.int64)
        filled = np.empty((count, 4), np.int64)
        self._core.fill(start, count, sx.numpy(), sy.numpy(), qx.numpy(), qy.numpy(),
                        cl.numpy(), filled)
        got = torch.from_numpy(filled)
        return VariableEpisode(sx, sy, qx, qy, cl, ways=got[:, 1].clone(),
                               source=got[:, 0].clone())

    def batches(self, batch_size: int, start: int = 0, prefetch: int = 2,
                num_batches: int | None = None,
                pin_memory: bool = False) -> Iterator[VariableEpisode]:
        """Consecutive padded batches from episode ``start`` (``sample_batch(start + k *
        batch_size, batch_size)``), produced ``prefetch`` ahead on a background thread, as
        :meth:`metarobust.EpisodeSampler.batches`; ``close()`` or a ``with`` block stops it."""
        batch_size = check_int(batch_size, "batch_size", 1, _MAX_COUNT)
        start = check_int(start, "start", 0, _MAX_INDEX)
        prefetch = check_int(prefetch, "prefetch", 1)
        # The smallest batch possible (min_ways ways of one shot and one query each), for
        # the batches held at once: refused here, naming batch_size, if even that cannot fit.
        item = int(np.prod(self.image_shape)) * np.dtype(DTYPES[self.dtype]).itemsize
        least = batch_size * (32 + self.min_ways * (2 * (item + 8) + 8))
        check_nbytes(least * (prefetch + 2), "batch_size",
                     f"{prefetch + 2} batches of {batch_size} episodes of images "
                     f"{self.image_shape}")
        it = BatchIterator(cast(Any, self), batch_size, start, prefetch, num_batches,
                           _pin(pin_memory))
        return cast(Iterator[VariableEpisode], it)
