"""Episodes and the Rust episode sampler.

>>> import numpy as np, metarobust as mr
>>> images = np.zeros((40, 1, 8, 8), np.uint8); labels = np.repeat(np.arange(10), 4)
>>> sampler = mr.EpisodeSampler((images, labels), ways=5, shots=1, queries=3, seed=0)
>>> sampler.sample(7).query_x.shape
torch.Size([15, 1, 8, 8])
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from . import _core
from ._checks import check_int as _check_int
from ._checks import check_nbytes
from ._prefetch import Producer
from ._sampler_args import as_arrays as _as_arrays  # noqa: F401  (robust/ uses it)
from ._sampler_args import check_classes, check_feature_options, check_scale, image_arrays, listify
from ._sampler_args import pin_memory as _pin
from .corruption_info import check_corruption_args

DTYPES = {"float32": np.float32, "uint8": np.uint8}
_NUMPY = {torch.float32: np.float32, torch.uint8: np.uint8, torch.int64: np.int64}
_MAX_INDEX = 2**64 - 1  # episode indices and seeds are u64 in the core
_MAX_COUNT = 2**63 - 1  # counts are i64 there


@dataclass(frozen=True)
class Episode:
    """One episode, or a batch of them with a leading dimension.

    support_x (ways*shots, C, H, W), support_y (ways*shots,) in 0..ways-1,
    query_x (ways*queries, C, H, W), query_y (ways*queries,), classes (ways,): the dataset
    class of each episode label. Support and query items are grouped by label. Over
    feature vectors, support_x is (ways*shots, D) and query_x (ways*queries, D).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    def __getitem__(self, j: int) -> Episode:
        """Episode `j` of a batch."""
        if self.support_y.dim() != 2:
            raise TypeError("Episode: indexing needs a batch (tensors with a leading dimension)")
        return Episode(*(getattr(self, f.name)[j] for f in fields(self)))

    def __len__(self) -> int:
        if self.support_y.dim() != 2:
            raise TypeError("Episode: len() needs a batch")
        return self.support_y.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Episode:
        """The same episode on `device` (non_blocking copies need pinned memory to overlap)."""
        return Episode(
            *(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self))
        )


def _check_count(value: Any, name: str, low: int) -> int:
    """An int ``>= low`` that the core's i64 counts hold."""
    value = _check_int(value, name, low)
    if value > _MAX_COUNT:
        raise ValueError(f"{name}: must be <= {_MAX_COUNT}, got {value}")
    return value


class EpisodeSampler:
    """N-way K-shot episode sampler over a uint8 (N, C, H, W) dataset, or float32 (N, D)
    feature vectors, in Rust.

    Episode ``i`` is a pure function of ``(seed, i)``: the same for any thread count, batch
    split or process. The dataset is referenced, never copied (a memory map works).

    Args:
        dataset: an ImageDataset, an ``(images, labels)`` tuple, or the images array with
            ``labels`` given (numpy arrays or CPU torch tensors). images: uint8,
            C-contiguous, (N, C, H, W) (see ``layout``); or float32 (N, D) feature vectors
            (finite), whose episodes hold ``(ways * shots, D)`` rows copied as they are
            (dtype "float32" only; the image options below are refused). labels: int64 (N,).
        layout: "NCHW", "NHWC" (transposed once), or None: NCHW, refusing an array whose
            last axis is 1 or 3 while its second is not (it looks NHWC; see
            :mod:`metarobust.data.arrays`).
        ways, shots, queries: classes per episode, support items and query items per class.
        seed: 0 <= seed < 2**64.
        dtype: "float32" (pixels scaled to [0, 1], then ``(x - mean) / std`` if given) or
            "uint8" (raw, to normalise on the GPU).
        mean, std: one value or one per channel, for float32 output.
        classes: restrict episodes to these dataset classes (a split).
        corruption: None, or one of :data:`CORRUPTIONS` (see
            :mod:`metarobust.robust.corruptions` for what each does at each severity),
            applied in Rust in the same parallel pass as the sampling.
        severity: 1..5, how strong the corruption is.
        corrupt: which items to corrupt: "query" (default), "support" or "both".
        ink: "dark" (ink towards 0 on a light background, as Omniglot and the glyphs) or
            "light": stroke thickening/thinning, occluders and the background that geometric
            warps bring in depend on it.
        corruption_cache_mb: memory (MiB) for caching the corruptions with a finite set of
            results per image (gaussian_blur, thicken, thin and contrast have one; rotate and
            shear two, one per direction; contrast only for uint8 output, in float32 it is
            as cheap to compute). Once as many corrupted items have been computed as the
            cache holds, every image of the sampled classes is corrupted once (in parallel)
            and later episodes copy the results: the same values, at about the clean
            sampling speed (so the cache costs at most what it saves). 0 turns it off. The
            images must not change in place.

    Item ``j`` of episode ``i`` (``j`` counts ``support_x``, then ``query_x``) is corrupted
    with the randomness of stream ``(seed, i, j)``: for float32 output without mean/std, and
    for uint8 output, it equals ``metarobust.robust.corrupt(np.concatenate([s, q]), name,
    severity, seed=seed, index=i, ink=ink)[j]`` with ``s, q`` the clean episode's
    ``support_x, query_x``. The corruption runs on ``[0, 1]`` floats, before mean/std.
    """

    def __init__(
        self,
        dataset: Any,
        labels: Any = None,
        *,
        ways: int,
        shots: int,
        queries: int = 15,
        seed: int = 0,
        dtype: str = "float32",
        mean: float | list[float] | None = None,
        std: float | list[float] | None = None,
        classes: Any = None,
        corruption: str | None = None,
        severity: int = 3,
        corrupt: str = "query",
        ink: str = "dark",
        corruption_cache_mb: float = 256,
        layout: str | None = None,
    ) -> None:
        images, labels = image_arrays(dataset, labels, layout)
        self.features = images.ndim == 2
        if self.features:
            check_feature_options(dtype=dtype != "float32", mean=mean is not None,
                                  std=std is not None, corruption=corruption is not None)
        if (isinstance(corruption_cache_mb, bool)
                or not isinstance(corruption_cache_mb, (int, float, np.integer, np.floating))
                or not 0 <= corruption_cache_mb < float("inf")):
            raise ValueError(f"corruption_cache_mb: expected a finite number >= 0, got "
                             f"{corruption_cache_mb!r}")
        self.corruption_cache_mb = corruption_cache_mb
        self.corruption, self.severity, self.ink, self.corrupt = check_corruption_args(
            corruption, severity, ink, corrupt=corrupt)
        if corruption is None:
            # Without a corruption they would do nothing: a forgotten `corruption=` would
            # pass for a corrupted evaluation.
            for name, value, default in (("severity", severity, 3),
                                         ("corrupt", corrupt, "query"), ("ink", ink, "dark")):
                if value != default:
                    raise ValueError(f"{name}: configures a corruption, and none is given "
                                     f"(pass corruption=NAME; got {name}={value!r})")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"dtype: expected 'float32' or 'uint8', got {dtype!r}")
        if dtype == "uint8" and (mean is not None or std is not None):
            raise ValueError("mean/std: only apply to dtype='float32' output")
        self.ways = _check_count(ways, "ways", 1)
        self.shots = _check_count(shots, "shots", 1)
        self.queries = _check_count(queries, "queries", 0)
        self.seed = _check_int(seed, "seed", 0, _MAX_INDEX)
        self.dtype = dtype
        classes = check_classes(classes)
        scale = listify(mean, "mean"), listify(std, "std")
        check_scale(*scale)
        self._args = (images, labels, classes, mean, std)
        self._core: Any
        if self.features:
            self._core = _core.FeatureSamplerCore(images, labels, self.ways, self.shots,
                                                  self.queries, self.seed, classes)
            self.image_shape: tuple[int, ...] = (self._core.feature_dim,)
            return
        self._core = _core.SamplerCore(
            images, labels, self.ways, self.shots, self.queries, self.seed,
            classes, *scale,
            corruption=self.corruption, severity=self.severity, corrupt=self.corrupt,
            ink=self.ink, cache_bytes=min(int(corruption_cache_mb * 2**20), 2**62),
        )
        self.image_shape = self._core.image_shape

    @property
    def class_ids(self) -> list[int]:
        """Dataset classes that episodes draw from."""
        return self._core.class_ids

    def __repr__(self) -> str:
        corruption = "" if self.corruption is None else (
            f", corruption={self.corruption!r}, severity={self.severity}, "
            f"corrupt={self.corrupt!r}, ink={self.ink!r}")
        return (
            f"EpisodeSampler(ways={self.ways}, shots={self.shots}, queries={self.queries}, "
            f"seed={self.seed}, dtype={self.dtype!r}, classes={len(self.class_ids)}, "
            f"image_shape={self.image_shape}{corruption})"
        )

    # Pickling rebuilds the Rust side (spawn-based DataLoader workers).
    def __getstate__(self) -> dict:
        return {"args": self._args, "ways": self.ways, "shots": self.shots,
                "queries": self.queries, "seed": self.seed, "dtype": self.dtype,
                "corruption": self.corruption, "severity": self.severity,
                "corrupt": self.corrupt, "ink": self.ink,
                "corruption_cache_mb": self.corruption_cache_mb}

    def __setstate__(self, state: dict) -> None:
        images, labels, classes, mean, std = state["args"]
        EpisodeSampler.__init__(
            self, images, labels, ways=state["ways"], shots=state["shots"],
            queries=state["queries"], seed=state["seed"], dtype=state["dtype"], mean=mean,
            std=std, classes=classes,
            # Absent from states pickled before corruptions existed.
            corruption=state.get("corruption"), severity=state.get("severity", 3),
            corrupt=state.get("corrupt", "query"), ink=state.get("ink", "dark"),
            corruption_cache_mb=state.get("corruption_cache_mb", 256),
            layout=None if images.ndim == 2 else "NCHW",  # stored NCHW
        )

    def sample(self, index: int) -> Episode:
        """Episode ``index``."""
        return self.sample_batch(_check_int(index, "index", 0, _MAX_INDEX), 1)[0]

    def sample_batch(self, start: int, count: int, pin_memory: bool = False) -> Episode:
        """Episodes ``start .. start + count`` as one batch; ``b[j] == sample(start + j)``.

        pin_memory: allocate the outputs in page-locked memory for fast GPU copies.
        """
        start = _check_int(start, "start", 0, _MAX_INDEX)
        count = _check_count(count, "count", 1)
        self._check_batch_bytes(count, "count")
        pin_memory = _pin(pin_memory)
        w, s, q = self.ways, self.shots, self.queries
        tdt = torch.float32 if self.dtype == "float32" else torch.uint8

        def empty(*shape: int, dt: torch.dtype = tdt) -> torch.Tensor:
            if pin_memory:
                return torch.empty(shape, dtype=dt, pin_memory=True)
            # NumPy asks for transparent huge pages on large arrays: far fewer page faults
            # than torch.empty when every batch gets fresh memory.
            return torch.from_numpy(np.empty(shape, dtype=_NUMPY[dt]))

        out = Episode(
            support_x=empty(count, w * s, *self.image_shape),
            support_y=empty(count, w * s, dt=torch.int64),
            query_x=empty(count, w * q, *self.image_shape),
            query_y=empty(count, w * q, dt=torch.int64),
            classes=empty(count, w, dt=torch.int64),
        )
        self._core.fill(start, count, *(getattr(out, f.name).numpy() for f in fields(out)))
        return out

    def _check_batch_bytes(self, count: int, name: str, batches: int = 1) -> None:
        """A ValueError naming ``name`` if ``batches`` batches of ``count`` episodes do not
        fit in memory (checked before allocating: NumPy would raise a MemoryError)."""
        pixels = (self.ways * (self.shots + self.queries) * int(np.prod(self.image_shape))
                  * np.dtype(DTYPES[self.dtype]).itemsize)
        labels = 8 * self.ways * (self.shots + self.queries + 1)
        what = f"{count} episodes" if batches == 1 else f"{batches} batches of {count} episodes"
        check_nbytes(batches * count * (pixels + labels), name,
                     f"{what} of {self.ways} ways, {self.shots} shots, {self.queries} queries "
                     f"and images {self.image_shape}")

    def batches(
        self,
        batch_size: int,
        start: int = 0,
        prefetch: int = 2,
        num_batches: int | None = None,
        pin_memory: bool = False,
        stride: int | None = None,
        transform: Callable[[Episode, int], Episode] | None = None,
    ) -> BatchIterator:
        """Consecutive batches from episode ``start``, produced ahead on a background thread.

        stride: episodes from one batch's start to the next (default ``batch_size``); a
        distributed rank takes its slice of each global batch with ``stride=global_batch``.
        transform: ``transform(batch, first_episode_index)``, run on the background thread
        too (e.g. :class:`metarobust.robust.Augment`).

        >>> for batch in sampler.batches(32, num_batches=100):  # doctest: +SKIP
        ...     train_step(batch)
        """
        batch_size = _check_count(batch_size, "batch_size", 1)
        self._check_batch_bytes(batch_size, "batch_size")
        prefetch = _check_int(prefetch, "prefetch", 1)
        # the queue holds `prefetch` batches, the thread fills one more, the caller holds one
        self._check_batch_bytes(batch_size, "prefetch", prefetch + 2)
        return BatchIterator(self, batch_size, start, prefetch, num_batches,
                             _pin(pin_memory), stride, transform)


class BatchIterator(Iterator[Episode]):
    """Iterator over consecutive batches, filled ``prefetch`` batches ahead by a thread.

    The Rust sampler releases the GIL, so filling overlaps the caller's work. ``close()``
    (or leaving a ``with`` block) stops the thread and waits for it; an iterator that is
    dropped without ``close()`` stops its thread when it is collected. ``position`` is the
    next episode index.
    """

    def __init__(self, sampler: EpisodeSampler, batch_size: int, start: int, prefetch: int,
                 num_batches: int | None, pin_memory: bool, stride: int | None = None,
                 transform: Callable[[Episode, int], Episode] | None = None) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable (batch, first_episode_index), "
                            f"got {type(transform).__name__}")
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.stride = self.batch_size if stride is None else _check_int(stride, "stride", 1)
        self.position = _check_int(start, "start", 0)
        prefetch = _check_int(prefetch, "prefetch", 1)
        self._left = None if num_batches is None else _check_int(num_batches, "num_batches", 0)
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = Producer(sampler, self._queue, self._stop, self.position, self._left,
                                 self.batch_size, self.stride, pin_memory, transform)
        # set, not joined: collection may run on any thread, even the producer's own
        weakref.finalize(self, self._stop.set)
        self._thread.start()

    def __next__(self) -> Episode:
        if self._left == 0 or self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if item is None:
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        self.position += self.stride
        if self._left is not None:
            self._left -= 1
        return item

    def close(self) -> None:
        """Stops the prefetch thread and waits (up to 5 s) for it to finish."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EpisodeDataset(torch.utils.data.Dataset):
    """Episodes ``0 .. length-1`` of a sampler as a map-style Dataset (for DataLoader workers).

    Use ``DataLoader(EpisodeDataset(sampler, n), batch_size=None, num_workers=k)``.
    """

    def __init__(self, sampler: EpisodeSampler, length: int) -> None:
        if not isinstance(sampler, EpisodeSampler):
            raise TypeError(f"sampler: expected an EpisodeSampler, got {type(sampler).__name__}")
        self.sampler = sampler
        self.length = _check_int(length, "length", 1)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Episode:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {index!r} ({type(index).__name__})")
        if not 0 <= index < self.length:
            raise IndexError(f"index: {index} outside 0..{self.length - 1}")
        return self.sampler.sample(index)


def collate_episodes(episodes: Any) -> Episode:
    """Episodes of one shape stacked into a batch with a leading task dimension: the
    ``collate_fn`` of a DataLoader over an :class:`EpisodeDataset`.

    ``DataLoader(EpisodeDataset(sampler, n), batch_size=B, collate_fn=collate_episodes)``
    yields the batches ``sampler.sample_batch(k * B, B)`` would (bit for bit).
    """
    if isinstance(episodes, Episode) or not isinstance(episodes, (list, tuple)):
        raise TypeError(f"episodes: expected a list of Episodes, got {type(episodes).__name__}")
    if not episodes:
        raise ValueError("episodes: the list is empty")
    for k, ep in enumerate(episodes):
        if not isinstance(ep, Episode):
            raise TypeError(f"episodes[{k}]: expected an Episode, got {type(ep).__name__}")
        if ep.support_y.dim() != 1:
            raise ValueError(f"episodes[{k}]: a batch of episodes; collate single episodes")
    names = [f.name for f in fields(Episode)]
    first = episodes[0]
    for k, ep in enumerate(episodes[1:], 1):
        for name in names:
            a, b = getattr(first, name), getattr(ep, name)
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ValueError(f"episodes[{k}].{name}: {tuple(b.shape)} {b.dtype} differs "
                                 f"from episodes[0]'s {tuple(a.shape)} {a.dtype}")
    return Episode(*(torch.stack([getattr(ep, name) for ep in episodes]) for name in names))
