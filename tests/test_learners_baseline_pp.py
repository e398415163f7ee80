"""Baseline++ (metarobust.learners.baseline_pp): the batched head fit against a per-task
loop over torch's own weight-normalised nn.Linear and torch.optim.SGD (mini-batches and
full batch), the learner's logits against that loop, the fit reaching every support item
on separable features, zero epochs as the cosine prototype classifier, the reference scale
and bad options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _learners import WAYS, image_batch
from _nets import linear_backbone
from torch import nn

from metarobust.learners import BaselinePP
from metarobust.learners.baseline_pp import fit_cosine_head, reference_scale

# the head fits run many tiny operations: threads only add contention
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + 1e-5)


def loop_fit(x: torch.Tensor, y: torch.Tensor, ways: int, epochs: int, batch_size: int,
             lr: float = 0.01, weight_decay: float = 1e-3, scale: float = 2.0) -> torch.Tensor:
    """One task, as Chen et al.'s code fits it, from the class means."""
    head = nn.Linear(x.shape[1], ways, bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.stack([x[y == k].mean(0) for k in range(ways)]))
    head = nn.utils.parametrizations.weight_norm(head, dim=0)  # g starts at |v|
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, dampening=0.9,
                          weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=gen)
            for i in range(0, x.shape[0], batch_size):
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(scale * head(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return head.weight.detach()


def features(c: int = 3, shots: int = 5, d: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(WAYS).repeat(shots).expand(c, -1).contiguous()
    x = unit(torch.randn(c, WAYS * shots, d, generator=g, dtype=torch.float64))
    return x, y


@pytest.mark.parametrize("batch_size, epochs", [(4, 10), (None, 30), (2, 5)])
def test_the_batched_fit_is_the_per_task_torch_loop(batch_size, epochs):
    x, y = features()
    w = fit_cosine_head(x, y, WAYS, epochs=epochs, batch_size=batch_size, lr=0.05,
                        weight_decay=1e-2, scale=3.0)
    for t in range(3):
        ref = loop_fit(x[t], y[t], WAYS, epochs, batch_size or x.shape[1], lr=0.05,
                       weight_decay=1e-2, scale=3.0)
        torch.testing.assert_close(w[t], ref, rtol=1e-10, atol=1e-12)


def test_learner_logits_are_the_fitted_head_on_the_queries():
    net = linear_backbone()
    learner = BaselinePP(net, finetune_epochs=20).double().eval()
    batch = image_batch(b=2, shots=3, queries=2)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        s, q = unit(net(batch.support_x[i])).detach(), unit(net(batch.query_x[i])).detach()
        w = loop_fit(s, batch.support_y[i], WAYS, epochs=20, batch_size=4)
        torch.testing.assert_close(out[i], 2.0 * q @ w.T, rtol=1e-9, atol=1e-12)


def test_the_fit_separates_the_support_set():
    # separable features that the class means (the start) misclassify
    g = torch.Generator().manual_seed(6)
    centers = torch.randn(5, 16, generator=g, dtype=torch.float64)
    y = torch.arange(5).repeat(5)
    x = unit(centers[y] + 1.2 * torch.randn(25, 16, generator=g, dtype=torch.float64))[None]
    means = torch.stack([x[0][y == k].mean(0) for k in range(5)])
    assert float(((x[0] @ means.T).argmax(-1) == y).double().mean()) < 1
    w = fit_cosine_head(x, y[None], 5)  # the defaults: 100 epochs of mini-batches of 4
    assert bool(((x[0] @ w[0].T).argmax(-1) == y).all())


def test_zero_epochs_is_the_cosine_prototype_classifier():
    net = linear_backbone()
    learner = BaselinePP(net, finetune_epochs=0, scale=5.0).double()
    batch = image_batch(b=2)
    out = learner.query_logits(batch, WAYS)
    for i in range(2):
        s, q = unit(net(batch.support_x[i])), unit(net(batch.query_x[i]))
        means = torch.stack([s[batch.support_y[i] == k].mean(0) for k in range(WAYS)])
        torch.testing.assert_close(out[i], 5.0 * q @ means.T, rtol=1e-12, atol=1e-12)


def test_the_default_scale_is_the_reference_codes():
    assert reference_scale(5) == 2.0 and reference_scale(200) == 2.0
    assert reference_scale(201) == 10.0
    batch = image_batch(b=1)
    default = BaselinePP(linear_backbone(), finetune_epochs=3).double()
    explicit = BaselinePP(linear_backbone(), finetune_epochs=3, scale=2.0).double()
    torch.testing.assert_close(default.query_logits(batch, WAYS),
                               explicit.query_logits(batch, WAYS), rtol=0, atol=0)


def test_a_class_without_support_items_is_never_predicted():
    learner = BaselinePP(linear_backbone(), finetune_epochs=5).double()
    batch = image_batch(b=2, shots=2)
    sy = batch.support_y.clone()
    sy[1][sy[1] == 1] = 0
    out = learner.query_logits(batch._replace(support_y=sy), WAYS)
    assert bool(torch.isinf(out[1, :, 1]).all())
    assert bool(torch.isfinite(out[1][:, [0, 2]]).all()) and bool(torch.isfinite(out[0]).all())


@pytest.mark.parametrize("kw, exc, words", [
    (dict(finetune_epochs=-1), ValueError, "finetune_epochs: must be in [0, 100000], got -1"),
    (dict(finetune_epochs=1.5), TypeError, "finetune_epochs: expected an int, got 1.5"),
    (dict(batch_size=0), ValueError, "batch_size: must be >= 1, got 0"),
    (dict(finetune_lr=float("inf")), ValueError, "finetune_lr: must be finite and > 0"),
    (dict(finetune_lr=0), ValueError, "finetune_lr: must be finite and > 0, got 0"),
    (dict(weight_decay=-1e-3), ValueError, "weight_decay: must be finite and >= 0"),
    (dict(scale=0.0), ValueError, "scale: must be finite and > 0, got 0.0"),
    (dict(scale="2"), TypeError, "scale: expected a real number, got '2'"),
])
def test_bad_options_are_named(kw, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        BaselinePP(linear_backbone(), **kw)
