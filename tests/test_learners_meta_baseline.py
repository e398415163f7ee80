"""Meta-Baseline (metarobust.learners.meta_baseline): the logits against
F.cosine_similarity to the class means times the temperature, the temperature learned (or
fixed), meta-training lowering the loss, classes without support items, bad options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, image_batch
from torch import nn

from metarobust.learners import MetaBaseline


def linear_backbone(d: int = 6, side: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, d)).double()


def test_logits_are_the_scaled_cosine_to_the_class_means():
    net = linear_backbone()
    learner = MetaBaseline(net, temperature=7.0).double()
    batch = image_batch(b=2, shots=3, queries=2)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        s, q = net(batch.support_x[i]), net(batch.query_x[i])
        means = torch.stack([s[batch.support_y[i] == k].mean(0) for k in range(WAYS)])
        ref = 7.0 * F.cosine_similarity(q[:, None, :], means[None], dim=-1)
        torch.testing.assert_close(out[i], ref, rtol=1e-12, atol=1e-12)


def test_the_temperature_starts_at_ten_and_is_learned():
    learner = MetaBaseline(linear_backbone()).double()
    assert float(learner.temperature.detach()) == 10.0
    assert learner.pretrain_head == "linear" and learner.episodic
    learner.meta_backward(image_batch(), WAYS)
    assert learner.temperature.grad is not None and float(learner.temperature.grad.abs()) > 0
    fixed = MetaBaseline(linear_backbone(), learn_temperature=False).double()
    fixed.meta_backward(image_batch(), WAYS)
    assert fixed.temperature.grad is None


def test_meta_training_lowers_the_loss():
    learner = MetaBaseline(linear_backbone()).double()
    batch = image_batch(b=4, shots=2, queries=3, seed=3)
    opt = torch.optim.SGD(learner.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        losses.append(learner.meta_backward(batch, WAYS)["loss"])
        opt.step()
    assert losses[-1] < 0.8 * losses[0]


def test_a_class_without_support_items_is_never_predicted():
    learner = MetaBaseline(linear_backbone()).double()
    batch = image_batch(b=1, shots=2)
    sy = batch.support_y.clone()
    sy[0][sy[0] == 0] = 1
    out = learner.query_logits(batch._replace(support_y=sy), WAYS)
    assert bool(torch.isinf(out[0, :, 0]).all()) and bool(torch.isfinite(out[0, :, 1:]).all())


@pytest.mark.parametrize("kw, exc, words", [
    (dict(temperature=0.0), ValueError, "temperature: must be finite and > 0, got 0.0"),
    (dict(temperature=float("inf")), ValueError, "temperature: must be finite and > 0"),
    (dict(temperature=None), TypeError, "temperature: expected a real number, got None"),
    (dict(learn_temperature="yes"), TypeError, "learn_temperature: expected a bool"),
])
def test_bad_options_are_named(kw, exc, words):
    with pytest.raises(exc, match=words):
        MetaBaseline(linear_backbone(), **kw)
