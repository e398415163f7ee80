"""The sinusoid MLP (metarobust.models.mlp): body and full network shapes, parameter count,
and the registry's entry."""

from __future__ import annotations

import pytest
import torch
from _models import n_params

from metarobust.models import MLP, build_model, mlp_sinusoid


def test_mlp_sinusoid() -> None:
    body = mlp_sinusoid()
    assert body(torch.rand(5, 1)).shape == (5, 40) and body.out_features == 40
    full = mlp_sinusoid(outputs=1)  # 1-40-40-1
    assert full(torch.rand(5, 1)).shape == (5, 1) and full.out_features == 1
    assert n_params(full) == (1 * 40 + 40) + (40 * 40 + 40) + (40 + 1)
    assert build_model("mlp_sinusoid", 1, None).out_features == 40


def test_bad_sizes_are_named():
    cases = [
        (dict(hidden=None), TypeError, "^hidden: expected a list or tuple of ints"),
        (dict(hidden=b"x"), TypeError, "^hidden: expected a list or tuple"),  # was (120,)
        (dict(hidden=(4, 2.0)), TypeError, "^hidden: expected an int"),
        (dict(in_features=2**31), ValueError, "^in_features, hidden, outputs: an MLP with"),
        (dict(outputs=2**64), ValueError, "^in_features, hidden, outputs: an MLP with"),
        (dict(outputs=0), ValueError, "^outputs: must be >= 1"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error, match=words):
            MLP(**kwargs)
