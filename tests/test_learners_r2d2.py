"""R2-D2 (metarobust.learners.r2d2): the closed-form ridge weights against
torch.linalg.solve of the primal normal equations (both the Woodbury and the primal branch),
their gradients against finite differences, the learner's logits against the formula
written out here, meta-learned lambda, scale and bias, and bad options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, image_batch
from torch import nn

from metarobust.learners import R2D2
from metarobust.learners.r2d2 import ridge_weights


def linear_backbone(d: int, side: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, d)).double()


@pytest.mark.parametrize("n, d", [(6, 10), (12, 5), (7, 7)])  # Woodbury, primal, square
def test_ridge_weights_match_the_primal_solve(n, d):
    g = torch.Generator().manual_seed(n * d)
    x = torch.randn(3, n, d, generator=g, dtype=torch.float64)
    y = F.one_hot(torch.arange(n) % 4, 4).double().expand(3, n, 4)
    lam = torch.tensor(0.7, dtype=torch.float64)
    ref = torch.linalg.solve(x.transpose(1, 2) @ x + 0.7 * torch.eye(d, dtype=torch.float64),
                             x.transpose(1, 2) @ y)
    torch.testing.assert_close(ridge_weights(x, y, lam), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n, d", [(4, 6), (6, 3)])
def test_ridge_weights_gradients_match_finite_differences(n, d):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, n, d, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.one_hot(torch.arange(n) % 3, 3).double().expand(2, n, 3)
    lam = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, lam: ridge_weights(x, y, lam), (x, lam))


def test_logits_are_the_scaled_ridge_prediction_plus_bias():
    net = linear_backbone(20)
    learner = R2D2(net, lam=2.0, scale=3.0, bias=0.5).double()
    batch = image_batch(b=2, shots=2, queries=3)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        x = net(batch.support_x[i])
        q = net(batch.query_x[i])
        y = F.one_hot(batch.support_y[i], WAYS).double()
        w = torch.linalg.solve(x.T @ x + 2.0 * torch.eye(20, dtype=torch.float64), x.T @ y)
        # lam and scale are stored as float32 logarithms: exp(log(x)) to ~1e-8
        torch.testing.assert_close(out[i], 3.0 * q @ w + 0.5, rtol=1e-6, atol=1e-6)


def test_lambda_scale_and_bias_are_meta_learned():
    learner = R2D2(linear_backbone(5)).double()
    learner.train()
    learner.meta_backward(image_batch(), WAYS)
    for p in (learner.log_lam, learner.log_scale, learner.bias):
        assert p.grad is not None and float(p.grad.abs()) > 0
    fixed = R2D2(linear_backbone(5), learn_lam=False).double()
    fixed.meta_backward(image_batch(), WAYS)
    assert fixed.log_lam.grad is None
    assert float(fixed.lam) == pytest.approx(1.0)


def test_gradients_reach_the_backbone_through_the_solve():
    learner = R2D2(linear_backbone(6)).double()
    batch = image_batch(b=1)

    def loss(weight: torch.Tensor) -> torch.Tensor:
        params = {**dict(learner.named_parameters()), "backbone.1.weight": weight}
        out = torch.func.functional_call(learner, params, (batch.support_x[0],
                                                           batch.support_y[0],
                                                           batch.query_x[0]))
        return F.cross_entropy(out, batch.query_y[0])

    w = learner.backbone[1].weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (w,))


@pytest.mark.parametrize("kw, exc, words", [
    (dict(lam=0.0), ValueError, "lam: must be finite and > 0, got 0.0"),
    (dict(lam=float("nan")), ValueError, "lam: must be"),
    (dict(scale=-1.0), ValueError, "scale: must be finite and > 0, got -1.0"),
    (dict(bias="0"), TypeError, "bias: expected a real number, got '0'"),
    (dict(learn_lam=1), TypeError, "learn_lam: expected a bool, got 1"),
])
def test_bad_options_are_named(kw, exc, words):
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        R2D2(linear_backbone(4), **kw)
    with pytest.raises(TypeError, match="backbone: expected an nn.Module, got str"):
        R2D2("conv4")  # type: ignore[arg-type]
