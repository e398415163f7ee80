"""The sinusoid MLP (metarobust.models.mlp): body and full network shapes, parameter count,
and the registry's entry."""

from __future__ import annotations

import torch
from _models import n_params

from metarobust.models import build_model, mlp_sinusoid


def test_mlp_sinusoid() -> None:
    body = mlp_sinusoid()
    assert body(torch.rand(5, 1)).shape == (5, 40) and body.out_features == 40
    full = mlp_sinusoid(outputs=1)  # 1-40-40-1
    assert full(torch.rand(5, 1)).shape == (5, 1) and full.out_features == 1
    assert n_params(full) == (1 * 40 + 40) + (40 * 40 + 40) + (40 + 1)
    assert build_model("mlp_sinusoid", 1, None).out_features == 40
