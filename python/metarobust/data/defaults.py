"""What every command and reader takes when it is not told: the image size of each dataset
kind, and where the data lives (``--data-root``, else the ``METAROBUST_DATA`` environment
variable).

===============================  ==================  ===============================
kind                             default image size  source
===============================  ==================  ===============================
glyphs                           28                  the embedded renderer
omniglot                         28                  105 px strokes, area-averaged
folder                           84                  the miniImageNet convention
mini_imagenet, tiered_imagenet   84                  the published protocols
cub                              84                  Chen et al.'s protocol
cifar_fs, fc100                  32                  CIFAR-100's own size
idx, cache                       (as stored)         not resized
===============================  ==================  ===============================

>>> default_image_size("folder"), default_image_size("cache")
(84, None)
"""

from __future__ import annotations

import os

__all__ = ["DATA_ENV", "IMAGE_SIZES", "default_image_size", "resolve_data_root"]

DATA_ENV = "METAROBUST_DATA"
IMAGE_SIZES: dict[str, int] = {"glyphs": 28, "omniglot": 28, "folder": 84, "mini_imagenet": 84,
                               "tiered_imagenet": 84, "cub": 84, "cifar_fs": 32, "fc100": 32}


def default_image_size(kind: str) -> int | None:
    """The image side a dataset of ``kind`` is resized to by default (None: not resized)."""
    return IMAGE_SIZES.get(kind)


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> str | None:
    """``data_root`` when given, else ``$METAROBUST_DATA`` when set (and not empty), else
    None. A given path is returned as given, whether it exists or not: the reader says
    what is missing."""
    if data_root is not None and str(data_root) != "":
        return str(data_root)
    env = os.environ.get(DATA_ENV)
    return env if env else None
