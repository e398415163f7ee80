"""Backbones: Conv-4 (three published forms, and Snell's with ceil-mode pooling), ResNet-12 and
the sinusoid MLP.

Every model maps a batch to ``(N, out_features)`` features and exposes ``out_features``,
except ``conv4_sung`` (Relation Networks' encoder), which returns its feature maps
``(N, C, h, w)`` (``out_features`` their flattened size).
The learners add their own head (MAML: a linear layer; ProtoNet: none).

>>> import torch
>>> net = build_model("conv4_finn", in_channels=1, image_size=28)
>>> net(torch.zeros(2, 1, 28, 28)).shape, net.out_features
(torch.Size([2, 64]), 64)

BatchNorm layers are ordinary ``nn.BatchNorm2d``; MAML turns them into per-task,
batch-statistics layers itself (see ``metarobust.learners.maml``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .conv4 import Conv4, conv4_finn, conv4_mini, conv4_snell, conv4_snell_ceil
from .conv4_sung import Conv4Sung, conv4_sung
from .mlp import MLP, mlp_sinusoid
from .resnet12 import ResNet12, resnet12

__all__ = [
    "MODELS", "MLP", "Conv4", "Conv4Sung", "ResNet12", "build_model", "conv4_finn",
    "conv4_mini", "conv4_snell", "conv4_snell_ceil", "conv4_sung", "mlp_sinusoid", "resnet12",
]


def _mlp(in_channels: int, image_size: int | None, **kw) -> nn.Module:
    # in_channels is the input width (1 for sinusoid x); image_size does not apply.
    return mlp_sinusoid(in_features=in_channels, **kw)


def _image(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def make(in_channels: int, image_size: int | None, **kw) -> nn.Module:
        if image_size is None:
            raise ValueError(f"image_size: {fn.__name__} needs the input image side, got None")
        return fn(in_channels, image_size, **kw)
    return make


#: name -> factory(in_channels, image_size, **kw)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "conv4_finn": _image(conv4_finn),
    "conv4_snell": _image(conv4_snell),
    "conv4_snell_ceil": _image(conv4_snell_ceil),
    "conv4_mini": _image(conv4_mini),
    "conv4_sung": _image(conv4_sung),
    "resnet12": _image(resnet12),
    "mlp_sinusoid": _mlp,
}


def build_model(name: str, in_channels: int = 1, image_size: int | None = 28,
                **kw) -> nn.Module:
    """The backbone ``name`` (one of :data:`MODELS`) for ``in_channels`` x ``image_size``
    inputs; ``kw`` goes to its constructor (``filters`` for the Conv-4s, ``widths`` for
    ResNet-12, ``hidden``/``outputs`` for the MLP)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if name not in MODELS:
        raise ValueError(f"name: unknown model {name!r}; expected one of {', '.join(MODELS)}")
    try:
        return MODELS[name](in_channels, image_size, **kw)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise TypeError(f"build_model({name!r}): {e}") from None
        raise
