"""Datasets: Omniglot, image folders, IDX (MNIST format), the few-shot benchmarks
(miniImageNet, tieredImageNet, CIFAR-FS, FC100, CUB-200-2011), embedded glyphs, sinusoid
tasks, and the memory-mapped cache that stores any of the image datasets.

>>> import numpy as np
>>> import metarobust as mr
>>> ds = mr.data.ImageDataset(np.zeros((6, 1, 28, 28), np.uint8), [0, 1, 2, 0, 1, 2])
>>> ds.num_classes, ds.images.shape[1:]
(3, (1, 28, 28))

Readers: ``glyphs`` (embedded, no files), ``omniglot``, ``image_folder``, ``idx``;
``mini_imagenet``, ``tiered_imagenet``, ``cifar_fs``, ``fc100``, ``cub`` read the
benchmarks' own files with their published class splits; ``load``
reads a cache written by ``ImageDataset.save`` or ``metarobust data prepare``;
``sinusoid`` gives the MAML regression tasks.
"""

from .cifar import cifar_fs, fc100
from .cub import cub
from .dataset import ImageDataset, load
from .glyphs import glyphs
from .idx import idx
from .image_folder import image_folder
from .mini_imagenet import mini_imagenet
from .omniglot import omniglot, omniglot_index
from .sinusoid import SinusoidTask, SinusoidTasks, sinusoid
from .tiered_imagenet import tiered_imagenet

__all__ = [
    "ImageDataset",
    "SinusoidTask",
    "SinusoidTasks",
    "cifar_fs",
    "cub",
    "fc100",
    "glyphs",
    "idx",
    "image_folder",
    "load",
    "mini_imagenet",
    "omniglot",
    "omniglot_index",
    "sinusoid",
    "tiered_imagenet",
]
