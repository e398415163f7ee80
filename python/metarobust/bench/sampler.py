"""Episode sampler benchmark: batches of episodes per second from the Rust sampler and its
references, on Omniglot-shaped data.

Candidates (:func:`sampler_candidates`), each producing one batch of ``batch`` episodes:

- ``rust``: :class:`metarobust.EpisodeSampler` ``.sample_batch`` (fresh output tensors);
- ``numpy``: :class:`NumpyEpisodeSampler`, a vectorised NumPy sampler (Generator draws for a
  whole batch, ``np.take`` gathers, ``astype(float32)`` then ``/= 255`` for float output);
- ``dataloader``: a per-item ``Dataset`` + episode batch sampler + ``DataLoader``
  (``num_workers=0``, collated with ``torch.stack``), as learn2learn / easyfsl do;
- ``memcpy``: ``np.copyto`` of a preallocated source holding the same bytes into freshly
  ``np.empty``-allocated outputs: the bandwidth ceiling with the sampler's allocation pattern.

Diagnostics: :func:`sampler_memory` (resident memory around sampling) and
:func:`sampler_alloc_probe` (the cost of fresh output buffers: page faults).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..data import resolve_data_root
from ..episodes import Episode, EpisodeSampler
from .memory import _malloc_trim, _rss_bytes
from .timing import DEFAULT_MIN_TIME, DEFAULT_REPEATS, _stats, measure

DEFAULT_SAMPLER_SETTINGS: tuple[tuple[int, int, int], ...] = ((5, 1, 15), (20, 5, 15))
DEFAULT_BATCH = 64
DTYPES = ("float32", "uint8")
SAMPLER_CANDIDATES = ("rust", "numpy", "dataloader", "memcpy")
_EPISODE_FIELDS = ("support_x", "support_y", "query_x", "query_y", "classes")


def _setting(ways: int, shots: int, queries: int) -> str:
    """The label of an episode setting in the tables, e.g. ``5w1s15q``."""
    return f"{ways}w{shots}s{queries}q"


def omniglot_like(data_root: str | None = None, image_size: int = 28,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images, labels, source)``: Omniglot background, 964 classes x 20, uint8 (N, 1, S, S).

    From ``<data_root or $METAROBUST_DATA>/omniglot-npz/images_background.npz`` when it
    exists (dark ink on white as in the source; resized 105 -> ``image_size`` with PIL
    ``Image.BOX`` area averaging); otherwise synthetic random pixels of the same shape.
    """
    root = resolve_data_root(data_root)
    path = os.path.join(root, "omniglot-npz", "images_background.npz") if root else None
    if path and os.path.exists(path):
        from PIL import Image

        with np.load(path) as z:
            white = z["images"]  # bool (classes, 20, 105, 105), True = background
        classes, per_class = white.shape[:2]
        flat = white.reshape(-1, *white.shape[2:])
        images = np.empty((flat.shape[0], 1, image_size, image_size), np.uint8)
        for i, im in enumerate(flat):
            # Not view(uint8) * 255: the file stores True as 0xFF, and 0xFF * 255 wraps to 1.
            pil = Image.fromarray(np.where(im, np.uint8(255), np.uint8(0)), mode="L")
            images[i, 0] = np.asarray(pil.resize((image_size, image_size), Image.Resampling.BOX))
        labels = np.repeat(np.arange(classes, dtype=np.int64), per_class)
        return images, labels, f"Omniglot background ({path}), dark ink on white, BOX-resized"
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (964 * 20, 1, image_size, image_size), dtype=np.uint8)
    labels = np.repeat(np.arange(964, dtype=np.int64), 20)
    return images, labels, "synthetic uint8 (964 classes x 20, METAROBUST_DATA not set)"


# ---------------------------------------------------------------- references

class NumpyEpisodeSampler:
    """A straightforward vectorised NumPy episode sampler (the reference for ``rust``).

    Per batch: distinct classes by one ``integers`` draw (rows with a repeat redrawn with
    ``choice(replace=False)``), items by ``argsort`` of uniform draws within each class,
    then one ``np.take`` gather each for support and query items; float32 output is
    ``astype(float32)`` then ``/= 255`` in place. Needs the same number of items in every
    class.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, ways: int, shots: int,
                 queries: int, seed: int = 0, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        order = np.argsort(labels, kind="stable")
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() != counts.max():
            raise ValueError("labels: NumpyEpisodeSampler needs equal class sizes")
        self.images, self.dtype = images, dtype
        self.table = order.reshape(len(counts), counts[0])  # (classes, per_class) item ids
        self.ways, self.shots, self.queries = ways, shots, queries
        self.rng = np.random.default_rng(seed)
        self._sy = np.repeat(np.arange(ways, dtype=np.int64), shots)
        self._qy = np.repeat(np.arange(ways, dtype=np.int64), queries)

    def draw(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class ids ``(count, ways)`` and item ids ``(count, ways, shots)`` and
        ``(count, ways, queries)``."""
        n_classes, per_class = self.table.shape
        w, s, q = self.ways, self.shots, self.queries
        # Uniform distinct classes: draw with replacement, redraw the rare rows with repeats.
        cls = self.rng.integers(0, n_classes, (count, w))
        ordered = np.sort(cls, axis=1)
        for row in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):
            cls[row] = self.rng.choice(n_classes, w, replace=False)
        pick = np.argsort(self.rng.random((count, w, per_class)), axis=2)[:, :, : s + q]
        items = self.table[cls[:, :, None], pick]
        return cls, items[:, :, :s], items[:, :, s:]

    def sample_batch(self, count: int) -> Episode:
        """``count`` episodes with a leading batch dimension, as the Rust sampler's."""
        cls, sup, qry = self.draw(count)
        xs = []
        for idx in (sup, qry):
            x = np.take(self.images, idx.reshape(count, -1), axis=0)
            if self.dtype == "float32":
                x = x.astype(np.float32)
                x /= 255
            xs.append(torch.from_numpy(x))
        return Episode(
            support_x=xs[0],
            support_y=torch.from_numpy(np.tile(self._sy, (count, 1))),
            query_x=xs[1],
            query_y=torch.from_numpy(np.tile(self._qy, (count, 1))),
            classes=torch.from_numpy(np.ascontiguousarray(cls)),
        )


class _ItemDataset(torch.utils.data.Dataset):
    """One image per item, converted to a float tensor in [0, 1] (or kept uint8)."""

    def __init__(self, images: np.ndarray, to_float: bool) -> None:
        self.images, self.to_float = images, to_float

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = torch.from_numpy(self.images[index])
        return x.float().div_(255) if self.to_float else x


class _EpisodeBatchSampler(torch.utils.data.Sampler):
    """Yields, per batch of ``count`` episodes, one flat index list: every support item of
    every episode (episode, way, shot order), then every query item, so the stacked tensor
    splits into support and query by views."""

    def __init__(self, numpy_sampler: NumpyEpisodeSampler, count: int, batches: int) -> None:
        self.ns, self.count, self.batches = numpy_sampler, count, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for _ in range(self.batches):
            _, sup, qry = self.ns.draw(self.count)
            yield sup.reshape(-1).tolist() + qry.reshape(-1).tolist()


def _collate(count: int, ways: int, shots: int, queries: int):
    """The DataLoader's ``collate_fn``: stacked items split into a batch of episodes."""
    sy = torch.arange(ways).repeat_interleave(shots).repeat(count, 1)
    qy = torch.arange(ways).repeat_interleave(queries).repeat(count, 1)
    cl = torch.zeros(count, ways, dtype=torch.int64)  # item lists carry no episode classes

    def collate(items: list[torch.Tensor]) -> Episode:
        x = torch.stack(items)
        n_sup = count * ways * shots
        return Episode(
            support_x=x[:n_sup].view(count, ways * shots, *x.shape[1:]),
            support_y=sy,
            query_x=x[n_sup:].view(count, ways * queries, *x.shape[1:]),
            query_y=qy,
            classes=cl,
        )

    return collate


def _dataloader_sampler(images, labels, ways, shots, queries, batch, dtype, seed):
    """The ``dataloader`` candidate: consecutive batches from a per-item DataLoader."""
    ns = NumpyEpisodeSampler(images, labels, ways, shots, queries, seed, "uint8")
    loader = torch.utils.data.DataLoader(
        _ItemDataset(images, dtype == "float32"),
        batch_sampler=_EpisodeBatchSampler(ns, batch, 1 << 40),
        collate_fn=_collate(batch, ways, shots, queries),
        num_workers=0,
    )
    it = iter(loader)
    return lambda: next(it)


def _memcpy(sampler: EpisodeSampler, batch: int) -> Callable[[], tuple[np.ndarray, ...]]:
    """The ``memcpy`` candidate: one batch's bytes copied into fresh outputs."""
    ref = sampler.sample_batch(0, batch)
    sources = [getattr(ref, f).numpy().copy() for f in _EPISODE_FIELDS]

    def copy() -> tuple[np.ndarray, ...]:
        outs = []
        for src in sources:
            out = np.empty(src.shape, src.dtype)
            np.copyto(out, src)
            outs.append(out)
        return tuple(outs)

    return copy


def _rust_batches(sampler: EpisodeSampler, batch: int,
                  alloc: str = "sample_batch") -> Callable[[], Any]:
    """Consecutive batches from ``sampler``. alloc: ``sample_batch`` (the public method:
    fresh ``torch.empty`` outputs), ``np.empty`` (fresh NumPy outputs filled by the same Rust
    call, wrapped with ``torch.from_numpy``) or ``reused`` (one set of outputs, refilled)."""
    ref = sampler.sample_batch(0, batch)
    specs = [(t.shape, t.numpy().dtype) for t in (getattr(ref, f) for f in _EPISODE_FIELDS)]
    reused = [np.empty(shape, dt) for shape, dt in specs]
    position = [0]

    def call() -> Any:
        start = position[0]
        position[0] += batch
        if alloc == "sample_batch":
            return sampler.sample_batch(start, batch)
        outs = reused if alloc == "reused" else [np.empty(shape, dt) for shape, dt in specs]
        sampler._core.fill(start, batch, *outs)
        return Episode(*(torch.from_numpy(o) for o in outs))

    if alloc not in ("sample_batch", "np.empty", "reused"):
        raise ValueError(f"alloc: expected sample_batch, np.empty or reused, got {alloc!r}")
    return call


# ---------------------------------------------------------------- benchmark

def sampler_candidates(images: np.ndarray, labels: np.ndarray, ways: int, shots: int,
                       queries: int, batch: int, dtype: str, seed: int = 0,
                       names: Iterable[str] = SAMPLER_CANDIDATES) -> dict[str, Callable]:
    """Zero-argument callables, each producing one batch of ``batch`` episodes."""
    rust = EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries,
                          seed=seed, dtype=dtype)
    out: dict[str, Callable] = {}
    for name in names:
        if name == "rust":
            out[name] = _rust_batches(rust, batch)
        elif name == "numpy":
            ns = NumpyEpisodeSampler(images, labels, ways, shots, queries, seed, dtype)
            out[name] = lambda ns=ns: ns.sample_batch(batch)
        elif name == "dataloader":
            out[name] = _dataloader_sampler(images, labels, ways, shots, queries, batch,
                                            dtype, seed)
        elif name == "memcpy":
            out[name] = _memcpy(rust, batch)
        else:
            raise ValueError(f"sampler candidate: expected one of {SAMPLER_CANDIDATES}, "
                             f"got {name!r}")
    return out


def _batch_bytes(ways: int, shots: int, queries: int, batch: int, image_size: int,
                 dtype: str) -> int:
    """Output bytes of one batch: images, labels (int64) and episode classes (int64)."""
    px = 4 if dtype == "float32" else 1
    return batch * (ways * (shots + queries) * (image_size * px + 8) + ways * 8)


def bench_sampler(
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    settings: Sequence[tuple[int, int, int]] = DEFAULT_SAMPLER_SETTINGS,
    batch: int = DEFAULT_BATCH,
    dtypes: Sequence[str] = DTYPES,
    repeats: int = DEFAULT_REPEATS,
    min_time: float = DEFAULT_MIN_TIME,
    names: Sequence[str] = SAMPLER_CANDIDATES,
) -> list[dict]:
    """One row per (setting, dtype, candidate): episodes/s, GB/s of output, ratios."""
    if images is None or labels is None:
        images, labels, _ = omniglot_like()
    item = int(np.prod(images.shape[1:]))
    rows = []
    for ways, shots, queries in settings:
        for dtype in dtypes:
            cands = sampler_candidates(images, labels, ways, shots, queries, batch, dtype,
                                       names=names)
            faults: dict[str, float] = {}
            times = measure(cands, repeats, min_time, faults)
            nbytes = _batch_bytes(ways, shots, queries, batch, item, dtype)
            best = {n: _stats(t)[0] for n, t in times.items()}
            for name, samples in times.items():
                t_best, t_med = _stats(samples)
                rows.append({
                    "setting": _setting(ways, shots, queries), "batch": batch, "dtype": dtype,
                    "candidate": name, "ms/batch": t_best * 1e3, "median ms": t_med * 1e3,
                    "episodes/s": batch / t_best, "GB/s": nbytes / t_best / 1e9,
                    "faults/batch": faults[name],
                    "rust speedup": best["rust"] / t_best if "rust" in best else float("nan"),
                })
            gc.collect()
    return rows


def sampler_summary(rows: list[dict]) -> list[dict]:
    """Per (setting, dtype): Rust/NumPy, Rust/DataLoader and Rust as % of the memcpy rate."""
    out = []
    keys = list(dict.fromkeys((r["setting"], r["dtype"]) for r in rows))
    for setting, dtype in keys:
        eps = {r["candidate"]: r["episodes/s"] for r in rows
               if r["setting"] == setting and r["dtype"] == dtype}
        rust = eps.get("rust", float("nan"))
        out.append({
            "setting": setting, "dtype": dtype, "rust ep/s": rust,
            "rust/numpy": rust / eps.get("numpy", float("nan")),
            "rust/dataloader": rust / eps.get("dataloader", float("nan")),
            "rust % memcpy": 100 * rust / eps.get("memcpy", float("nan")),
            "memcpy/dataloader": eps.get("memcpy", float("nan"))
            / eps.get("dataloader", float("nan")),
        })
    return out


# ---------------------------------------------------------------- diagnostics

def sampler_alloc_probe(images: np.ndarray, labels: np.ndarray,
                        settings: Sequence[tuple[int, int, int]] = DEFAULT_SAMPLER_SETTINGS,
                        batch: int = DEFAULT_BATCH, dtypes: Sequence[str] = DTYPES,
                        repeats: int = DEFAULT_REPEATS,
                        min_time: float = DEFAULT_MIN_TIME) -> list[dict]:
    """Diagnostic: the same Rust fill with fresh ``torch.empty`` outputs (``sample_batch``),
    fresh ``np.empty`` outputs, and reused outputs, with page faults per batch: separates
    the kernel from the cost of first-touching freshly mapped output pages."""
    rows = []
    item = int(np.prod(images.shape[1:]))
    for ways, shots, queries in settings:
        for dtype in dtypes:
            sampler = EpisodeSampler((images, labels), ways=ways, shots=shots,
                                     queries=queries, seed=0, dtype=dtype)
            cands = {a: _rust_batches(sampler, batch, a)
                     for a in ("sample_batch", "np.empty", "reused")}
            faults: dict[str, float] = {}
            times = measure(cands, repeats, min_time, faults)
            nbytes = _batch_bytes(ways, shots, queries, batch, item, dtype)
            base = min(times["sample_batch"])
            for name, samples in times.items():
                t_best, t_med = _stats(samples)
                rows.append({
                    "setting": _setting(ways, shots, queries), "dtype": dtype,
                    "batch MiB": nbytes / (1 << 20), "outputs": name,
                    "ms/batch": t_best * 1e3, "median ms": t_med * 1e3,
                    "GB/s": nbytes / t_best / 1e9, "faults/batch": faults[name],
                    "speedup vs sample_batch": base / t_best,
                })
            gc.collect()
    return rows


def sampler_memory(images: np.ndarray, labels: np.ndarray, ways: int = 5, shots: int = 1,
                   queries: int = 15, batch: int = DEFAULT_BATCH, dtype: str = "float32",
                   warmup: int = 50, batches: int = 500, hold: int = 10) -> dict:
    """Resident memory (VmRSS, MiB) around sampling, to show that the sampler neither copies
    the dataset nor leaks.

    Columns: building the sampler (the dataset is referenced, never copied: only the class
    index is added); ``warmup`` batches dropped one by one (malloc keeps some freed output
    buffers on its free lists: a few batches at most); ``batches`` more (the steady state:
    no leak and no per-batch copy of anything but the outputs, so about 0); then ``hold``
    batches kept alive (``held/batch out``: only the output buffers should grow RSS, so
    about 1 or less).
    """
    gc.collect()
    _malloc_trim()
    start = _rss_bytes()
    sampler = EpisodeSampler((images, labels), ways=ways, shots=shots, queries=queries,
                             seed=0, dtype=dtype)
    built = _rss_bytes()
    for i in range(warmup):
        sampler.sample_batch(i * batch, batch)
    warm = _rss_bytes()
    for i in range(warmup, warmup + batches):
        sampler.sample_batch(i * batch, batch)
    gc.collect()
    after = _rss_bytes()
    kept = [sampler.sample_batch(i * batch, batch) for i in range(hold)]
    holding = _rss_bytes()
    nbytes = sum(t.numel() * t.element_size() for t in vars(kept[0]).values())
    del kept
    mib = 1 << 20
    return {
        "setting": _setting(ways, shots, queries), "batch": batch, "dtype": dtype,
        "dataset": images.nbytes / mib, "batch out": nbytes / mib, "RSS start": start / mib,
        "+sampler": (built - start) / mib, f"+{warmup} warm-up": (warm - built) / mib,
        f"+{batches} more": (after - warm) / mib, f"+{hold} held": (holding - after) / mib,
        "held/batch out": (holding - after) / (hold * nbytes),
    }
