"""Conv-4 backbones in their three published forms.

=============  =============================================================================
conv4_finn     Finn et al. (2017), Omniglot: 4 x [3x3 conv, stride 2, padding 1, BatchNorm,
               ReLU], no pooling, then the spatial mean: a ``filters``-d feature (64).
conv4_snell    Snell et al. (2017): 4 x [3x3 conv, padding 1, BatchNorm, ReLU, 2x2 max-pool],
               flattened: 64-d for 28x28 input, 1600-d for 84x84.
conv4_snell_ceil  The same, pooling odd sides up (ceil mode) instead of dropping their last
               row and column: 28 -> 14 -> 7 -> 4 -> 2, 256-d for 28x28 (metarobust's
               default ProtoNet backbone on Omniglot, where it scores above conv4_snell).
conv4_mini     The miniImageNet net of Vinyals et al. (2016) / Finn et al. (2017): the same
               blocks as conv4_snell with ``filters`` 32 (Finn) or 64 (Vinyals, the default),
               flattened: ``filters * 5 * 5`` at 84x84 (1600 for 64 filters).
=============  =============================================================================

Every backbone maps ``(N, C, H, W)`` to ``(N, out_features)``.

>>> import torch
>>> net = conv4_snell(in_channels=1, image_size=28)
>>> net(torch.zeros(2, 1, 28, 28)).shape, net.out_features
(torch.Size([2, 64]), 64)
"""

from __future__ import annotations

import torch
from torch import nn

from metarobust._checks import check_bool, check_nbytes
from metarobust.models.fused import fused_block

__all__ = ["Conv4", "conv4_finn", "conv4_mini", "conv4_snell", "conv4_snell_ceil"]


def _check_positive(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")
    return value


def _check_ints(values: object, name: str) -> tuple[int, ...]:
    """A list or tuple of ints >= 1 (``hidden``, ``widths``), each checked."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{name}: expected a list or tuple of ints, got {values!r} "
                        f"({type(values).__name__})")
    return tuple(_check_positive(v, name) for v in values)


def _check_parameters(count: int, names: str, what: str) -> None:
    """A ValueError naming ``names`` if ``count`` float32 parameters exceed the machine's
    memory: checked before torch allocates them (its allocator's RuntimeError, or an
    overflow inside torch.empty, named nothing)."""
    check_nbytes(4 * count, names, f"{what} with {count} parameters")


def _block(cin: int, cout: int, stride: int, pool: bool, ceil: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.BatchNorm2d(cout),
    ]
    # Max-pooling before the ReLU gives the same values and gradients (both are monotone),
    # and the ReLU then runs on a quarter of the pixels: the first block's full-resolution
    # maps are a large part of a CPU step. Neither holds parameters, so checkpoints are
    # unaffected.
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=ceil))
    layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """Four conv blocks of ``filters`` channels.

    Args:
        in_channels: image channels.
        image_size: side of the square input (sets ``out_features`` when flattening).
        filters: channels of every block.
        strided: stride-2 convolutions without pooling (Finn's Omniglot net) instead of
            stride-1 convolutions followed by 2x2 max-pooling.
        readout: "mean" (spatial mean, ``filters`` features) or "flatten"
            (``filters * h * w`` features).
        ceil_pool: pooling keeps an odd side's last row and column (``ceil(side / 2)``)
            instead of dropping them (``floor``, as Snell et al.).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, filters: int = 64, *,
                 strided: bool = False, readout: str = "flatten",
                 ceil_pool: bool = False) -> None:
        super().__init__()
        in_channels = _check_positive(in_channels, "in_channels")
        image_size = _check_positive(image_size, "image_size")
        filters = _check_positive(filters, "filters")
        strided = check_bool(strided, "strided")
        ceil_pool = check_bool(ceil_pool, "ceil_pool")
        if readout not in ("mean", "flatten"):
            raise ValueError(f"readout: expected 'mean' or 'flatten', got {readout!r}")
        if ceil_pool and strided:
            raise ValueError("ceil_pool: applies to pooling blocks, not to strided ones")
        _check_parameters((9 * in_channels + 4) * filters + 3 * (9 * filters + 4) * filters,
                          "in_channels, filters", "a Conv-4")
        side = image_size
        for _ in range(4):
            # conv 3x3 padding 1: stride 2 gives ceil(side / 2); stride 1 + pool floor(side / 2)
            # (ceil with ceil_pool)
            side = (side - 1) // 2 + 1 if strided or ceil_pool else side // 2
            if side < 1:
                raise ValueError(
                    f"image_size: {image_size} is too small for four "
                    f"{'strided' if strided else 'pooling'} blocks (needs >= "
                    f"{1 if strided else 16})")
        self.image_size = image_size
        self.readout = readout
        self.blocks = nn.Sequential(*(
            _block(in_channels if i == 0 else filters, filters, 2 if strided else 1, not strided,
                   ceil_pool)
            for i in range(4)
        ))
        self.out_features = filters if readout == "mean" else filters * side * side
        # Set by the learners: the first block through metarobust.models.fused where it
        # applies.
        self.fuse_first_block = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = fused_block(self.blocks[0], x) if self.fuse_first_block else None
        x = self.blocks(x) if first is None else self.blocks[1:](first)
        return x.mean(dim=(2, 3)) if self.readout == "mean" else x.flatten(1)


def conv4_finn(in_channels: int = 1, image_size: int = 28, filters: int = 64) -> Conv4:
    """Finn et al. (2017) Omniglot Conv-4: strided convs, no pooling, spatial mean (64-d)."""
    return Conv4(in_channels, image_size, filters, strided=True, readout="mean")


def conv4_snell(in_channels: int = 1, image_size: int = 28, filters: int = 64) -> Conv4:
    """Snell et al. (2017) Conv-4: conv + BN + ReLU + max-pool, flattened (64-d at 28x28)."""
    return Conv4(in_channels, image_size, filters, strided=False, readout="flatten")


def conv4_snell_ceil(in_channels: int = 1, image_size: int = 28, filters: int = 64) -> Conv4:
    """:func:`conv4_snell` with ceil-mode pooling: odd sides keep their last row and column
    (28x28: 28 -> 14 -> 7 -> 4 -> 2, 256-d instead of 64-d; the same parameters)."""
    return Conv4(in_channels, image_size, filters, strided=False, readout="flatten",
                 ceil_pool=True)


def conv4_mini(in_channels: int = 3, image_size: int = 84, filters: int = 64) -> Conv4:
    """miniImageNet Conv-4 (Vinyals 64 filters; Finn et al. use ``filters=32``), flattened.

    ``filters * 5 * 5`` features at 84x84: 1600 for 64 filters, 800 for 32. With 64 filters
    it is the same architecture as :func:`conv4_snell`.
    """
    return Conv4(in_channels, image_size, filters, strided=False, readout="flatten")
