"""Datasets that stand in for another domain in robustness tests: where they are found, and
their images brought to a learner's input shape.

Targets: ``glyphs`` (the embedded glyphs' test split), ``omniglot`` (the evaluation split,
from a data root or ``METAROBUST_DATA``), ``fashion_mnist`` (the t10k IDX files of the
Debian package ``dataset-fashion-mnist``: ``apt-get install -y dataset-fashion-mnist``, files
in ``/usr/share/datasets/fashion-mnist``) and ``fashion_mnist_inverted`` (``255 - x``).

Fashion-MNIST is light objects on a dark background while Omniglot and the glyphs are dark
ink on white. ``fashion_mnist`` is *not* inverted: the polarity is part of the shift;
``fashion_mnist_inverted`` shows how much of a drop is polarity alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._checks import check_int, check_nbytes
from .defaults import resolve_data_root

__all__ = [
    "FASHION_MNIST_DIR", "FASHION_MNIST_INSTALL", "MissingTarget", "fit_images",
    "omniglot_root", "shift_target",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get install -y dataset-fashion-mnist"


class MissingTarget(LookupError):
    """A target's data is not on this machine; the message says how to get it."""


def omniglot_root(data_root: str | os.PathLike | None = None) -> str | None:
    """``data_root`` if it exists, else ``METAROBUST_DATA`` if set and existing, else None."""
    for root in (data_root, resolve_data_root(None)):
        if root and Path(root).exists():
            return str(root)
    return None


def _omniglot(image_size: int, data_root: str | os.PathLike | None) -> tuple[np.ndarray,
                                                                              np.ndarray, str]:
    from .omniglot import omniglot

    root = omniglot_root(data_root)
    if root is None:
        raise MissingTarget("no Omniglot data (pass --data-root or set METAROBUST_DATA)")
    try:
        ds = omniglot(root, split="evaluation", image_size=image_size, progress=False)
    except (FileNotFoundError, ValueError) as e:
        raise MissingTarget(f"no Omniglot evaluation set under {root} ({e})") from None
    return ds.images, ds.labels, "omniglot/evaluation"


def _fashion_mnist(inverted: bool, root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray,
                                                                     str]:
    from .idx import idx

    base = Path(root)
    paths = [sorted(base.glob(f"t10k-{k}-idx*")) for k in ("images", "labels")]
    if not all(paths):
        raise MissingTarget(f"no Fashion-MNIST t10k files in {base} (install them with: "
                            f"{FASHION_MNIST_INSTALL})")
    ds = idx(paths[0][0], paths[1][0])
    images, desc = np.asarray(ds.images), "fashion_mnist/t10k"
    if inverted:
        images, desc = 255 - images, desc + ", inverted"
    return images, np.asarray(ds.labels), desc


def shift_target(target: str, image_size: int, data_root: str | os.PathLike | None = None,
                 fashion_mnist_root: str | os.PathLike = FASHION_MNIST_DIR,
                 ) -> tuple[np.ndarray, np.ndarray, str]:
    """``(images, labels, description)`` of a target, uint8 (N, C, H, W) as read;
    :class:`MissingTarget` when its files are not here."""
    if target == "glyphs":
        from .glyphs import glyphs

        ds = glyphs(num_classes=200, per_class=20, image_size=image_size, seed=0, split="test")
        return ds.images, ds.labels, "glyphs/test"
    if target == "omniglot":
        return _omniglot(image_size, data_root)
    if target in ("fashion_mnist", "fashion_mnist_inverted"):
        return _fashion_mnist(target == "fashion_mnist_inverted", fashion_mnist_root)
    raise ValueError(f"target: expected glyphs, omniglot, fashion_mnist or "
                     f"fashion_mnist_inverted, got {target!r}")


def fit_images(images: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """Images of another dataset in ``channels`` channels of ``size`` pixels (channels
    repeated or averaged; area resampling down, bilinear up), uint8, C-contiguous."""
    import torch

    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        raise TypeError(f"images: expected a numpy uint8 array (N, C, H, W), got "
                        f"{getattr(images, 'dtype', type(images).__name__)} of shape "
                        f"{getattr(images, 'shape', None)}")
    channels = check_int(channels, "channels", 1)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"size: expected (height, width), got {size!r}")
    size = (check_int(size[0], "size", 1), check_int(size[1], "size", 1))
    pixels = max(images.shape[2] * images.shape[3], size[0] * size[1])
    check_nbytes(4 * images.shape[0] * max(channels, images.shape[1]) * pixels,
                 "channels, size", f"{images.shape[0]} images of {channels} x {size} in float32")
    c = images.shape[1]
    if c != channels:
        if c == 1:
            images = np.repeat(images, channels, axis=1)
        elif channels == 1:
            images = images.mean(axis=1, keepdims=True).round().astype(np.uint8)
        else:
            raise ValueError(f"domain shift: cannot map {c} channels to {channels}")
    if tuple(images.shape[2:]) != tuple(size):
        t = torch.from_numpy(np.array(images, dtype=np.float32))
        mode = "area" if t.shape[-1] >= size[-1] else "bilinear"
        kw = {} if mode == "area" else {"align_corners": False}
        t = torch.nn.functional.interpolate(t, size=tuple(size), mode=mode, **kw)
        images = t.round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(images)
