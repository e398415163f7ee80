"""Image corruptions at five severities, in the Rust core (deterministic, parallel, GIL
released), after Hendrycks & Dietterich's ImageNet-C / CIFAR-10-C and Mu & Gilmer's MNIST-C,
scaled to 28x28 glyphs. The table below is built from :data:`CORRUPTION_INFO`, which the
core exports (the values are the ones its code uses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _core, seeds
from .._checks import check_int as _check_int
from .._checks import check_nbytes
from ..corruption_info import (
    CORRUPTION_INFO,
    CORRUPTIONS,
    SEVERITIES,
    CorruptionInfo,
    check_corruption_args,
    info_table,
)

__all__ = [
    "CORRUPTIONS", "CORRUPTION_INFO", "SEVERITIES", "Augment", "CorruptionInfo", "corrupt",
]

# The module's documentation after the table built from CORRUPTION_INFO.
_NOTES = """
Gaussian noise: a normal draw is a sum of four 16-level table draws (CDF within 0.0033 of
the normal's, kurtosis 2.98, ``|z| <= 4.18``), in whole grey levels (1/255; std within 0.5%
of the listed one), so noisy bytes are exact bytes.

Lengths (sigma, radii, displacement, patch side) are for 28x28 images and scale with
``min(H, W) / 28``. Values stay in range ([0, 1] for float32, 0..255 for uint8; uint8 results
are ``floor(255 x + 0.5)`` of the float result). ``ink`` is the polarity: ``"dark"`` (ink
towards 0 on a white background: Omniglot, the glyphs) or ``"light"``. Thicken and thin
act on the ink; occluders are ink-coloured; rotate, shear and elastic fill what comes from
outside the image with the background. A soft disk of radius ``r`` weighs the neighbour at
distance ``d > 0`` by ``clamp(r + 1 - d, 0, 1)``.

Randomness: image ``j`` of ``corrupt(images, ..., seed=s, index=i)`` uses the stream
``(s, i, j)`` (ChaCha8 keyed by ``s`` on stream ``i``, item ``j`` mixed in), so the result is
a pure function of ``(images[j], name, severity, seed, index, j, ink)``, whatever the batch
split or thread count. The episode sampler uses the same streams: with
``EpisodeSampler(..., seed=s, corruption=name)``, item ``j`` of episode ``i`` (``j`` counts
the support items, then the queries) is ``corrupt(np.concatenate([support_x, query_x]),
name, severity, seed=s, index=i)[j]`` of the clean episode (float32 output without mean/std,
or uint8 output). Severities share the random draws (the same noise pattern, scaled; one
more patch each step), so the change from the clean image grows with the severity.

>>> import numpy as np
>>> from metarobust.robust import corrupt
>>> x = np.full((2, 1, 28, 28), 255, np.uint8)
>>> corrupt(x, "occlusion", 2).min(), corrupt(x, "occlusion", 2).dtype
(np.uint8(0), dtype('uint8'))
"""

__doc__ = f"{__doc__}\n{info_table(CORRUPTION_INFO)}{_NOTES}"

_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
_MAX_INDEX = 2**64 - 1
_TORCH_DTYPES = (torch.uint8, torch.float32)
# Float scratch the core grows for one image (one unit and four workspace buffers of the
# image's size, an index buffer), per thread: sizes beyond memory are refused up front.
_SCRATCH_PER_PIXEL = 6 * 4


def corrupt(images: Any, name: str, severity: int, seed: int = 0, index: int = 0,
            ink: str = "dark") -> np.ndarray:
    """A corrupted copy of ``images``.

    Args:
        images: numpy uint8 or float32 (values in [0, 1]) array, (N, C, H, W), C-contiguous.
        name: one of :data:`CORRUPTIONS`.
        severity: 1..5.
        seed, index: the random stream (0 <= each < 2**64); image ``j`` uses
            ``(seed, index, j)``, as item ``j`` of episode ``index`` of a sampler with
            that seed.
        ink: "dark" or "light", the polarity of the ink.

    Returns:
        A new array of the same dtype and shape.
    """
    checked, severity, ink, _ = check_corruption_args(name, severity, ink, arg="name")
    if checked is None:
        raise TypeError("name: expected a str, got None")
    name = checked
    seed = _check_int(seed, "seed", 0, 2**64 - 1)
    index = _check_int(index, "index", 0, 2**64 - 1)
    if not isinstance(images, np.ndarray):
        hint = " (use tensor.numpy())" if type(images).__module__.startswith("torch") else ""
        raise TypeError(f"images: expected a numpy array, got {type(images).__name__}{hint}")
    if images.dtype not in _DTYPES:
        raise TypeError(f"images: expected dtype uint8 or float32, got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"images: expected 4 dimensions (N, C, H, W), got shape "
                         f"{images.shape}")
    if not images.flags.c_contiguous:
        raise ValueError("images: must be C-contiguous (use numpy.ascontiguousarray)")
    pixels = int(np.prod(images.shape[1:]))
    threads = min(images.shape[0], _core.num_threads())
    check_nbytes(images.nbytes + threads * pixels * _SCRATCH_PER_PIXEL, "images",
                 f"corrupting images of shape {images.shape}")
    out = np.empty_like(images)
    if images.size:
        _core.corrupt_into(images, out, name, severity, seed, index, ink)
    return out




class Augment:
    """Corruption augmentation of training episodes: a callable ``(batch, first_index)``
    for :meth:`EpisodeSampler.batches(transform=...) <metarobust.EpisodeSampler.batches>`.

    Each episode ``first_index + j`` of a batch is, with probability ``prob``, corrupted
    (support and queries alike) by one of ``names`` at a severity drawn from
    ``1..max_severity``, both chosen uniformly; the choice and the corruption are functions of
    ``(seed, episode index)`` alone, so a resumed or distributed run sees the same episodes.
    The corrupted episode equals ``corrupt(concat(support_x, query_x), name, severity,
    seed=seed, index=episode)``.

    >>> aug = Augment(["gaussian_blur", "gaussian_noise"], max_severity=3, prob=0.5, seed=0)
    >>> batches = sampler.batches(16, transform=aug)  # doctest: +SKIP
    """

    def __init__(self, names: Any, max_severity: int = 3, prob: float = 0.5, seed: int = 0,
                 ink: str = "dark") -> None:
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")] if names != "all" else CORRUPTIONS
        try:
            names = tuple(names)
        except TypeError:
            raise TypeError(f"names: expected corruption names (a list, a comma-separated "
                            f"str or 'all'), got {names!r}") from None
        if not names:
            raise ValueError("names: expected at least one corruption")
        for n in names:
            if n is None:  # check_corruption_args takes None for "no corruption"
                raise TypeError(f"names: expected corruption names (str), got {names!r}")
            check_corruption_args(n, 1, ink, arg="names")
        self.names = names
        self.max_severity = _check_int(max_severity, "max_severity", 1, SEVERITIES[-1])
        self.prob = _check_prob(prob)
        self.seed = _check_int(seed, "seed", 0, _MAX_INDEX)
        self.ink = ink

    def choice(self, episode: int) -> tuple[str, int] | None:
        """``(name, severity)`` for episode ``episode``, or None (left clean)."""
        episode = _check_int(episode, "episode", 0, _MAX_INDEX)
        rng = seeds.numpy_rng(self.seed, seeds.AUGMENT, episode)
        draw, pick, severity = rng.random(), rng.integers(len(self.names)), \
            rng.integers(1, self.max_severity + 1)
        return (self.names[pick], int(severity)) if draw < self.prob else None

    def __call__(self, batch: Any, first_index: int) -> Any:
        sx, qx = _batch_images(batch)
        first_index = _check_int(first_index, "first_index", 0, _MAX_INDEX - sx.shape[0] + 1)
        s = sx.shape[1]
        for j in range(sx.shape[0]):
            chosen = self.choice(first_index + j)
            if chosen is None:
                continue
            items = torch.cat([sx[j], qx[j]]).numpy()
            try:
                out = torch.from_numpy(corrupt(items, *chosen, seed=self.seed,
                                               index=first_index + j, ink=self.ink))
            except ValueError as e:  # float images outside [0, 1]: normalised ones
                raise ValueError(f"batch: episode {first_index + j}: {e} (Augment corrupts "
                                 "the sampler's images before any mean/std)") from None
            sx[j].copy_(out[:s])  # in place: pinned buffers stay pinned
            qx[j].copy_(out[s:])
        return batch

    def __repr__(self) -> str:
        return (f"Augment({list(self.names)!r}, max_severity={self.max_severity}, "
                f"prob={self.prob}, seed={self.seed}, ink={self.ink!r})")


def _check_prob(prob: Any) -> float:
    if isinstance(prob, bool) or not isinstance(prob, (int, float, np.integer, np.floating)):
        raise TypeError(f"prob: expected a probability in [0, 1], got {prob!r} "
                        f"({type(prob).__name__})")
    if not 0 <= prob <= 1:  # also refuses NaN
        raise ValueError(f"prob: expected a probability in [0, 1], got {prob!r}")
    return float(prob)


def _batch_images(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(support_x, query_x)`` of an Episode or a batch of them, with a leading episode
    dimension, as CPU uint8 or float32 tensors that :func:`corrupt` takes (TypeError naming
    ``batch`` otherwise)."""
    parts = []
    for field in ("support_x", "support_y", "query_x"):
        t = getattr(batch, field, None)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"batch: expected an Episode (support_x, support_y, query_x "
                            f"tensors), got {type(batch).__name__}")
        parts.append(t)
    sx, sy, qx = parts
    single = sy.dim() == 1
    for t, name in ((sx, "support_x"), (qx, "query_x")):
        if t.dtype not in _TORCH_DTYPES or t.device.type != "cpu":
            raise TypeError(f"batch.{name}: expected uint8 or float32 images on the CPU, got "
                            f"{t.dtype} on {t.device}")
        if t.dim() != (4 if single else 5):
            raise ValueError(f"batch.{name}: expected (n, C, H, W) images per episode, got "
                             f"shape {tuple(t.shape)}")
    return (sx[None], qx[None]) if single else (sx, qx)
