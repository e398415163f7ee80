"""Small episode batches and learners shared by the learner tests."""

from __future__ import annotations

import torch
from torch import nn

from metarobust.learners import MAML, Task
from metarobust.models import build_model

WAYS = 3


def image_batch(b: int = 3, shots: int = 2, queries: int = 2, side: int = 8,
                seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(WAYS).repeat(shots).expand(b, -1).contiguous()
    qy = torch.arange(WAYS).repeat(queries).expand(b, -1).contiguous()
    sx = torch.rand(b, WAYS * shots, 1, side, side, generator=g, dtype=torch.float64)
    qx = torch.rand(b, WAYS * queries, 1, side, side, generator=g, dtype=torch.float64)
    return Task(sx, sy, qx, qy)


def tiny_conv_maml(variant: str, order: str, path: str, model: str = "conv4_finn",
                   side: int = 8, **kw) -> MAML:
    torch.manual_seed(0)
    net = build_model(model, 1, side, filters=3)
    return MAML(net, inner_lr=0.3, inner_steps=2, test_inner_steps=3, order=order,
                variant=variant, ways=WAYS, path=path, **kw).double()


def grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
