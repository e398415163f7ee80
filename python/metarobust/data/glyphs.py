"""The embedded default dataset: procedural, Omniglot-like handwritten glyphs.

Each class is a seeded set of 1 to 4 pen strokes (cubic Bezier curves: long strokes, short
hooks, dots), often joined the way handwritten characters are. Each image of a class is
those strokes redrawn by a "different hand": jittered control points, a random rotation,
scale, shear and shift, and its own pen width, rendered anti-aliased as dark ink (towards 0)
on a light background (255), like Omniglot. The rendering runs in the Rust core, in
parallel with the GIL released.

Everything is a pure function of ``(seed, class id, instance)``: the same arguments give the
same images on every machine and for any thread count, and ``per_class=5`` gives the first
five images of ``per_class=20``.

Splits are disjoint ranges of class ids: class ``k`` of split ``"train"`` has id ``k``, of
``"val"`` id ``2**32 + k``, of ``"test"`` id ``2**33 + k``. So ``glyphs(split="test")``
never shares a class with ``glyphs(split="train")``, whatever ``num_classes`` is.

>>> ds = glyphs(num_classes=3, per_class=4, image_size=28, seed=0)
>>> ds.images.shape, ds.images.dtype, ds.labels.tolist()
((12, 1, 28, 28), dtype('uint8'), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
>>> ds.metadata["source"], ds.metadata["split"], ds.class_names[0]
('glyphs', 'train', 'glyph-train-0')
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._checks import check_int as _check_int
from .._checks import check_nbytes, physical_memory
from .dataset import ImageDataset

__all__ = ["SPLITS", "glyph_class_ids", "glyphs"]

SPLITS = ("train", "val", "test")
#: Version of the glyph generator; bumped whenever the same arguments would give other images.
GENERATOR_VERSION = 1
_MAX_SEED = 2**64 - 1


def _check_split(split: object) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    return str(split)


def glyph_class_ids(num_classes: int, split: str = "train") -> np.ndarray:
    """The class ids (int64) of the first ``num_classes`` classes of ``split``."""
    split = _check_split(split)
    n = _check_int(num_classes, "num_classes", 1, _core.GLYPH_SPLIT_STRIDE)
    check_nbytes(8 * n, "num_classes", f"the ids of {n} classes")
    return np.arange(n, dtype=np.int64) + np.int64(_core.GLYPH_SPLIT_OFFSETS[split])


def glyphs(
    num_classes: int = 100,
    per_class: int = 20,
    image_size: int = 28,
    seed: int = 0,
    split: str = "train",
) -> ImageDataset:
    """Render the procedural glyph dataset.

    Args:
        num_classes: number of classes (1..2**32), labels ``0..num_classes-1``.
        per_class: images per class (>= 1).
        image_size: side of the square images in pixels (8..512).
        seed: any int in 0..2**64-1; it fixes the glyph alphabet.
        split: ``"train"``, ``"val"`` or ``"test"``: disjoint sets of classes.

    Returns:
        An :class:`ImageDataset` with images ``(num_classes * per_class, 1, S, S)`` uint8
        (class-major: the images of class 0 first), labels int64, class names
        ``glyph-<split>-<k>`` and metadata ``source="glyphs"``, ``split``, ``image_size``,
        ``seed``, ``num_classes``, ``per_class``, ``class_id_offset``, ``generator_version``.
    """
    split = _check_split(split)
    num_classes = _check_int(num_classes, "num_classes", 1, _core.GLYPH_SPLIT_STRIDE)
    per_class = _check_int(per_class, "per_class", 1, 2**63 - 1)
    image_size = _check_int(image_size, "image_size", _core.GLYPH_MIN_SIZE, _core.GLYPH_MAX_SIZE)
    seed = _check_int(seed, "seed", 0, _MAX_SEED)
    # the images, their labels and the class names, before anything is allocated
    nbytes = num_classes * per_class * (image_size * image_size + 8) + 64 * num_classes
    limit = min(2**40, physical_memory())
    if nbytes > limit:
        raise ValueError(
            f"num_classes, per_class, image_size: {num_classes} classes of {per_class} images "
            f"of {image_size}x{image_size} would take {nbytes} bytes, too large (limit "
            f"{limit} bytes: 2**40 or this machine's memory)"
        )
    ids = glyph_class_ids(num_classes, split)
    images = _core.render_glyphs(seed, ids, per_class, image_size)
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    names = [f"glyph-{split}-{k}" for k in range(num_classes)]
    metadata = {
        "source": "glyphs",
        "split": split,
        "image_size": image_size,
        "seed": seed,
        "num_classes": num_classes,
        "per_class": per_class,
        "class_id_offset": int(_core.GLYPH_SPLIT_OFFSETS[split]),
        "generator_version": GENERATOR_VERSION,
    }
    return ImageDataset(images=images, labels=labels, class_names=names, metadata=metadata)
