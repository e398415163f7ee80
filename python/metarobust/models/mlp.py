"""Multi-layer perceptrons; ``mlp_sinusoid`` is MAML's sinusoid regression net.

``mlp_sinusoid()`` is the 1-40-40 ReLU body (``out_features`` 40): a learner adds the final
40-1 linear layer as its head (``MAML(..., task="regression")``), which makes the
1-40-40-1 net of Finn et al. (2017). ``mlp_sinusoid(outputs=1)`` is the whole 1-40-40-1 net.

>>> import torch
>>> mlp_sinusoid()(torch.zeros(5, 1)).shape
torch.Size([5, 40])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .conv4 import _check_ints, _check_parameters, _check_positive

__all__ = ["MLP", "mlp_sinusoid"]


class MLP(nn.Module):
    """``in_features -> hidden... `` with ReLU after every hidden layer, then an optional
    linear output layer of ``outputs`` units. Inputs ``(N, ...)`` are flattened to
    ``(N, in_features)``."""

    def __init__(self, in_features: int = 1, hidden: Sequence[int] = (40, 40),
                 outputs: int | None = None) -> None:
        super().__init__()
        sizes = (_check_positive(in_features, "in_features"), *_check_ints(hidden, "hidden"))
        if outputs is not None:
            outputs = _check_positive(outputs, "outputs")
        widths = sizes if outputs is None else (*sizes, outputs)
        _check_parameters(sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:])),
                          "in_features, hidden, outputs", "an MLP")
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        if outputs is not None:
            layers.append(nn.Linear(sizes[-1], outputs))
        if not layers:
            raise ValueError("hidden: an MLP without output layer needs a hidden layer")
        self.net = nn.Sequential(*layers)
        self.in_features = sizes[0]
        self.out_features = sizes[-1] if outputs is None else outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def mlp_sinusoid(in_features: int = 1, hidden: Sequence[int] = (40, 40),
                 outputs: int | None = None) -> MLP:
    """The sinusoid net: 1-40-40 ReLU body (``outputs=None``) or the whole 1-40-40-1 net."""
    return MLP(in_features, hidden, outputs)
