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
``sinusoid`` gives the MAML regression tasks. Your own data: ``from_arrays`` (numpy arrays
or torch tensors, NCHW or NHWC, uint8 or floats in [0, 1]) and ``from_torch`` (any
map-style torch ``Dataset`` of ``(image, label)``, optionally saved as a cache).
``default_image_size`` and ``resolve_data_root`` are the defaults every command shares.
"""

from .arrays import from_arrays
from .cache_dir import find_cache, is_cache, load_split
from .cifar import cifar_fs, fc100
from .cub import cub
from .dataset import ImageDataset, load
from .defaults import DATA_ENV, IMAGE_SIZES, default_image_size, resolve_data_root
from .glyphs import glyphs
from .idx import idx
from .image_folder import image_folder
from .mini_imagenet import mini_imagenet
from .omniglot import omniglot, omniglot_index
from .sinusoid import SinusoidTask, SinusoidTasks, sinusoid
from .tiered_imagenet import tiered_imagenet
from .torch_dataset import from_torch

__all__ = [
    "DATA_ENV",
    "IMAGE_SIZES",
    "ImageDataset",
    "SinusoidTask",
    "SinusoidTasks",
    "cifar_fs",
    "cub",
    "default_image_size",
    "fc100",
    "find_cache",
    "from_arrays",
    "from_torch",
    "glyphs",
    "idx",
    "is_cache",
    "image_folder",
    "load",
    "load_split",
    "mini_imagenet",
    "omniglot",
    "omniglot_index",
    "resolve_data_root",
    "sinusoid",
    "tiered_imagenet",
]
