"""What a training run takes in besides its config: datasets and a backbone of the user's
own (``Trainer(cfg, out, dataset=..., val_dataset=..., model=...)``), the backbone of a
run's config (a built-in name, a ``"module.path:factory"`` or a backbone object's record)
and the learner around it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data
from .config import ResolvedConfig, TrainConfig
from .data import ImageDataset
from .learners import (
    MAML,
    R2D2,
    TIM,
    BaselinePP,
    Learner,
    MatchingNet,
    MetaBaseline,
    MetaOptNet,
    ProtoMAML,
    ProtoNet,
    RelationNet,
    Reptile,
    SimpleShot,
)
from .models import build_model
from .models.user import OBJECT_PREFIX, build_user_model, is_factory_name

__all__ = ["MAML_VARIANTS", "backbone", "datasets", "learner", "load_dataset", "object_record",
           "resolve_device"]

# the transfer baselines, at their papers' test-time settings
TRANSFER = {"simpleshot": SimpleShot, "baseline_pp": BaselinePP, "meta_baseline": MetaBaseline,
            "tim": TIM}
MAML_VARIANTS = {"maml": ("second", "maml"), "fomaml": ("first", "maml"),
                 "metasgd": ("second", "metasgd"), "anil": ("second", "anil")}


def object_record(cfg: TrainConfig, model: Any) -> str:
    """config.toml's ``model`` for a run given the backbone object ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module backbone, got {type(model).__name__}")
    if cfg.model is not None:
        raise ValueError(f"model: a backbone object is given and the config names model "
                         f"{cfg.model!r}; leave the config's model unset")
    cls = type(model)
    return f"{OBJECT_PREFIX}{cls.__module__}.{cls.__qualname__}"


def backbone(cfg: ResolvedConfig, in_channels: int,
             model: nn.Module | None = None) -> nn.Module:
    """``model`` if given, else the backbone ``cfg.model`` names."""
    if model is not None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module backbone, got "
                            f"{type(model).__name__}")
        return model
    name = cfg.model
    if name.startswith(OBJECT_PREFIX):
        raise ValueError(
            f"model: the run was trained with a backbone object "
            f"({name[len(OBJECT_PREFIX):]}), which config.toml cannot rebuild; pass a new one "
            "of the same architecture: load_run(run_dir, model=backbone)")
    image_size = None if cfg.dataset == "sinusoid" else cfg.image_size
    if is_factory_name(name):
        return build_user_model(name, in_channels, image_size)
    return build_model(name, in_channels=in_channels, image_size=image_size)


def learner(cfg: ResolvedConfig, in_channels: int, model: nn.Module | None = None) -> Learner:
    """The learner of a resolved config around :func:`backbone`'s network (the learners'
    own constants, e.g. MetaOptNet's C, are their defaults)."""
    net = backbone(cfg, in_channels, model)
    shape = (in_channels, cfg.image_size, cfg.image_size)
    chunk = cfg.chunk_size
    if cfg.learner == "protonet":
        return ProtoNet(net, metric=cfg.metric, prototype=cfg.prototype, chunk_size=chunk,
                        channels_last=bool(cfg.channels_last))
    if cfg.learner in TRANSFER:
        return TRANSFER[cfg.learner](net, chunk_size=chunk)
    if cfg.learner in ("matching", "relation", "r2d2", "metaoptnet"):
        if cfg.learner == "matching":
            return MatchingNet(net, chunk_size=chunk)
        if cfg.learner == "relation":
            return RelationNet(net, input_shape=shape, chunk_size=chunk)
        return (R2D2 if cfg.learner == "r2d2" else MetaOptNet)(net, chunk_size=chunk)
    inner: dict[str, Any] = dict(inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                 test_inner_steps=cfg.test_inner_steps, chunk_size=chunk)
    if cfg.learner == "reptile":
        return Reptile(net, ways=cfg.ways, input_shape=shape, **inner)
    if cfg.learner == "protomaml":
        return ProtoMAML(net, ways=cfg.ways, **inner)
    order, variant = MAML_VARIANTS[cfg.learner]
    task: dict[str, Any] = dict(task="regression", outputs=1, ways=None) \
        if cfg.dataset == "sinusoid" else dict(ways=cfg.ways, input_shape=shape)
    return MAML(net, order=order, variant=variant, **inner, **task)


def image_side(dataset: Any) -> int | None:
    """The side of a user's square images (an ImageDataset or ``(images, labels)`` arrays of
    shape (n, c, h, w)), None for anything else (:func:`datasets` then says what is wrong):
    a config that leaves ``image_size`` unset takes it from the data given."""
    images = dataset.images if isinstance(dataset, ImageDataset) else \
        dataset[0] if isinstance(dataset, (tuple, list)) and len(dataset) == 2 else None
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[2] != shape[3] or shape[2] < 1:
        return None
    return int(shape[2])


def _image_dataset(value: Any, name: str, cfg: ResolvedConfig) -> ImageDataset:
    """An ImageDataset (arrays ``(images, labels)`` are wrapped) of the config's image size."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = ImageDataset(*value)
    if not isinstance(value, ImageDataset):
        raise TypeError(f"{name}: expected an ImageDataset or (images, labels) arrays, got "
                        f"{type(value).__name__}")
    side = value.images.shape[2:]
    if tuple(side) != (cfg.image_size, cfg.image_size):
        raise ValueError(f"{name}: images of {side[0]}x{side[1]} pixels, the config's "
                         f"image_size is {cfg.image_size}; images must be square: set "
                         f"image_size={side[0]} or resize them")
    return value


def datasets(cfg: ResolvedConfig, dataset: Any, val_dataset: Any,
             load: Callable[[Any, str | None, str], Any]) -> tuple[Any, Any]:
    """The training and validation (None: no validation) datasets of a run: the objects
    given, else ``load(cfg, split, role)`` of the config's. A training set given without a
    validation set: no validation."""
    if cfg.dataset == "sinusoid":
        if dataset is not None or val_dataset is not None:
            raise ValueError("dataset: sinusoid regression draws its tasks; datasets of "
                             "images are for classification (set the config's dataset)")
        return None, None
    train = (load(cfg, cfg.split, "train") if dataset is None
             else _image_dataset(dataset, "dataset", cfg))
    if val_dataset is not None:
        return train, _image_dataset(val_dataset, "val_dataset", cfg)
    if dataset is not None:
        return train, None
    val_split = cfg.val_split or ("val" if cfg.dataset == "glyphs" else None)
    return train, None if val_split is None else load(cfg, val_split, "val")


def load_dataset(cfg: TrainConfig, split: str | None, role: str = "train"):
    """The dataset of ``cfg`` for ``split`` (``role`` picks the split by default). The data
    root is ``cfg.data_root``, else ``$METAROBUST_DATA``; a root that holds a cache for the
    split (:mod:`metarobust.data.cache_dir`) is read from the cache, memory-mapped."""
    if cfg.dataset == "glyphs":
        n = cfg.glyph_classes if role == "train" else 200
        size = cfg.image_size or data.IMAGE_SIZES["glyphs"]
        return data.glyphs(num_classes=n, per_class=20, image_size=size, seed=cfg.seed,
                             split=split or role)
    root = data.resolve_data_root(cfg.data_root)
    if not root or not Path(root).exists():
        raise FileNotFoundError(f"data_root: {root!r} does not exist (pass --data-root or "
                                f"set {data.DATA_ENV})")
    if cfg.dataset == "cache" or data.find_cache(root, split, role) is not None:
        if cfg.rotations and role == "train":
            raise ValueError("rotations: a cache holds its classes as prepared; prepare it "
                             "with `metarobust data prepare omniglot --rotations`")
        return data.load_split(root, split, role, cfg.image_size)
    if cfg.dataset in data.IMAGE_SIZES:
        size = cfg.image_size or data.IMAGE_SIZES[cfg.dataset]
    if cfg.dataset == "omniglot":
        return data.omniglot(root, split=split or ("background" if role == "train"
                                                      else "evaluation"),
                               image_size=size,
                               rotations=bool(cfg.rotations) and role == "train")
    if cfg.dataset == "folder":
        return data.image_folder(root, image_size=size, split_csv=split)
    # idx: data_root holds <split>-images-idx3-ubyte[.gz] and <split>-labels-idx1-ubyte[.gz]
    prefix = split or ("train" if role == "train" else "t10k")
    found = {}
    for kind in ("images", "labels"):
        hits = sorted(Path(root).glob(f"{prefix}-{kind}-idx*"))
        if not hits:
            raise FileNotFoundError(f"data_root: no {prefix}-{kind}-idx* file in {root}")
        found[kind] = hits[0]
    return data.idx(found["images"], found["labels"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)
