"""Datasets: Omniglot, image folders, IDX (MNIST format), embedded glyphs, sinusoid tasks,
and the memory-mapped cache that stores any of the image datasets.

>>> import numpy as np
>>> import metarobust as mr
>>> ds = mr.data.ImageDataset(np.zeros((6, 1, 28, 28), np.uint8), [0, 1, 2, 0, 1, 2])
>>> ds.num_classes, ds.images.shape[1:]
(3, (1, 28, 28))

Readers: ``glyphs`` (embedded, no files), ``omniglot``, ``image_folder``, ``idx``; ``load``
reads a cache written by ``ImageDataset.save`` or ``metarobust data prepare``;
``sinusoid`` gives the MAML regression tasks.
"""

from .dataset import ImageDataset, load
from .glyphs import glyphs
from .idx import idx
from .image_folder import image_folder
from .omniglot import omniglot, omniglot_index
from .sinusoid import SinusoidTask, SinusoidTasks, sinusoid

__all__ = [
    "ImageDataset",
    "SinusoidTask",
    "SinusoidTasks",
    "glyphs",
    "idx",
    "image_folder",
    "load",
    "omniglot",
    "omniglot_index",
    "sinusoid",
]
